"""Open descriptors of published segments, so a cache miss on a page-cached file is read on the loop.

The in-memory cache (``EntryCache``) holds bytes up to ``cache_mb`` per
worker, and a catalog's working set is often larger.  A miss used to cost an
executor round trip (gate stat, stat, realpath, open, fstat, read) that, with
the loop busy, waited on the GIL at every syscall: about ten times a hit, and
the origin's p99.  Segments and init segments never change within one
publication of their asset, so the descriptor of each one loaded is kept
(``limit`` of them, least recently used closed first) with its entry's
metadata.  A miss for a kept file whose asset's gate (descriptor) was checked
within the revalidation window and is the one it was loaded under is read
with ``preadv(RWF_NOWAIT)``: straight from the page cache without blocking,
or ``EAGAIN`` when any of it is not resident, and then the executor reads it
as before.  The loop never waits on the disk either way.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from typing import Any

from origin.representation import Entry, Variant

__all__ = ("KeptFiles", "default_limit")


def default_limit() -> int:
    """A quarter of the descriptor limit, at most 4096: connections need the rest."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(0, min(4096, soft // 4))


class KeptFiles:
    """key -> (body-less entry, open descriptor); only the event loop touches it."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = default_limit() if limit is None else limit
        self._items: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self.reads = 0  # misses answered from a kept descriptor (tests and metrics read it)

    def __len__(self) -> int:
        return len(self._items)

    def keep(self, entry: Entry, fd: int) -> None:
        """Keep ``fd`` (now owned here) for ``entry``'s file; its bytes are not held."""
        if self.limit <= 0:
            os.close(fd)
            return
        self.forget(entry.key)
        self._items[entry.key] = (_with_body(entry, None, 0.0, entry.gate), fd)
        while len(self._items) > self.limit:
            _, (_, old) = self._items.popitem(last=False)
            os.close(old)

    def forget(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            os.close(item[1])

    def read(self, key: str, gate: Any, now: float) -> Entry | None:
        """The file's entry with its bytes, if kept under ``gate`` and wholly in the page cache; else None."""
        item = self._items.get(key)
        if item is None:
            return None
        meta, fd = item
        if meta.gate != gate:  # re-published since: the descriptor may be another version's
            self.forget(key)
            return None
        size = meta.identity.size
        body = bytearray(size)
        try:
            n = os.preadv(fd, [body], 0, os.RWF_NOWAIT)
        except BlockingIOError:  # not resident: the executor reads it (and warms the page cache)
            return None
        except OSError:
            self.forget(key)
            return None
        if n != size:
            return None
        self._items.move_to_end(key)
        self.reads += 1
        return _with_body(meta, body, now, gate)

    def close(self) -> None:
        while self._items:
            _, (_, fd) = self._items.popitem()
            os.close(fd)


def _with_body(entry: Entry, body: bytearray | None, checked: float, gate: Any) -> Entry:
    """A copy of a segment's entry holding ``body`` (or no bytes: what is kept); segments have no gzip."""
    ident = entry.identity
    return Entry(key=entry.key, kind=entry.kind, version=entry.version, mtime=entry.mtime,
                 identity=Variant(ident.etag, ident.size, body, ident.headers), gzip=None, path=entry.path,
                 checked=checked, gate=gate)
