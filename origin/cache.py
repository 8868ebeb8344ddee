"""A bounded LRU of ``Entry`` objects, bounded by bytes held and by count.

Only the event loop touches it (executor threads build entries, the loop
inserts them), so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict

from origin.representation import Entry

__all__ = ("EntryCache",)


class EntryCache:
    def __init__(self, max_bytes: int, max_entries: int = 20_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._items: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Entry | None:
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
        return entry

    def put(self, entry: Entry) -> None:
        old = self._items.pop(entry.key, None)
        if old is not None:
            self.bytes -= old.cost
        cost = entry.cost
        if cost > self.max_bytes:
            return
        self._items[entry.key] = entry
        self.bytes += cost
        while self.bytes > self.max_bytes or len(self._items) > self.max_entries:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.cost

    def drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.cost
