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

For a kept file whose bytes the cache does not hold, the fast path does
better still: it asks ``region`` for the file and gets an entry whose body
is a ``Region`` of the kept descriptor.  Before sending
it, ``origin.fastpath`` checks with ``cachestat(2)`` (``resident``) that
every page of the bytes to send is in the page cache, and sends them with
``sendfile(2)``: no buffer, no copy into user space, as nginx serves it.
A page evicted in the microseconds between the check and the send makes that
one send wait for the disk; that window is the whole of the risk.  Bytes the
cache does hold go out with the head in one write instead: one syscall and
no ``cachestat``, which measured faster (issue 12's A/B, README).
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from typing import Any

from origin.linux import residency
from origin.representation import Entry, Region, Variant

__all__ = ("KeptFiles", "default_limit", "read_resident", "resident")


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
        # key -> (body-less entry, descriptor, the entry with the whole file as a Region body)
        self._items: OrderedDict[str, tuple[Entry, int, Entry]] = OrderedDict()
        self.reads = 0  # misses answered from a kept descriptor (tests and metrics read it)

    def __len__(self) -> int:
        return len(self._items)

    def keep(self, entry: Entry, fd: int) -> None:
        """Keep ``fd`` (now owned here) for ``entry``'s file; its bytes are not held."""
        if self.limit <= 0:
            os.close(fd)
            return
        self.forget(entry.key)
        size = entry.identity.size
        self._items[entry.key] = (_with_body(entry, None, 0.0, entry.gate), fd,
                                  _with_body(entry, Region(fd, 0, size), 0.0, entry.gate))
        while len(self._items) > self.limit:
            _, (_, old, _) = self._items.popitem(last=False)
            os.close(old)

    def forget(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            os.close(item[1])

    def read(self, key: str, gate: Any, now: float, max_size: int) -> Entry | None:
        """The file's entry with its bytes, if kept under ``gate``, at most ``max_size`` bytes and wholly in
        the page cache; else None."""
        meta, fd, _ = self._current(key, gate)
        if meta is None or meta.identity.size > max_size:
            return None
        try:
            body = read_resident(fd, 0, meta.identity.size)
        except OSError:
            self.forget(key)
            return None
        if body is None:  # not resident: the executor reads it (and warms the page cache)
            return None
        self._items.move_to_end(key)
        self.reads += 1
        return _with_body(meta, body, now, gate)

    def region(self, key: str, gate: Any) -> Entry | None:
        """The file's entry with a ``Region`` body, if kept under ``gate``.

        Where its pages are is not checked here: the sender checks the bytes
        it is about to send (``resident``), one range of a long file included.
        """
        if not residency().available:
            return None
        meta, _, sendable = self._current(key, gate)
        if meta is None:
            return None
        self._items.move_to_end(key)
        return sendable  # built once at keep: the hot path allocates nothing for it

    def _current(self, key: str, gate: Any) -> tuple[Any, int, Any]:
        item = self._items.get(key)
        if item is None:
            return None, -1, None
        if item[0].gate != gate:  # re-published since: the descriptor may be another version's
            self.forget(key)
            return None, -1, None
        return item

    def close(self) -> None:
        while self._items:
            _, (_, fd, _) = self._items.popitem()
            os.close(fd)


def resident(region: Region) -> bool:
    """Whether every page of ``region`` is in the page cache, so sendfile will not wait for the disk."""
    return bool(residency().resident(region.fd, region.start, region.length))


def read_resident(fd: int, start: int, length: int) -> bytearray | None:
    """``length`` bytes at ``start`` if all are in the page cache (``preadv(RWF_NOWAIT)``), else None."""
    body = bytearray(length)
    try:
        n = os.preadv(fd, [body], start, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    return body if n == length else None


def _with_body(entry: Entry, body: bytearray | Region | None, checked: float, gate: Any) -> Entry:
    """A copy of a segment's entry holding ``body`` (or no bytes: what is kept); segments have no gzip."""
    ident = entry.identity
    return Entry(key=entry.key, kind=entry.kind, version=entry.version, mtime=entry.mtime,
                 identity=Variant(ident.etag, ident.size, body, ident.headers), gzip=None, path=entry.path,
                 checked=checked, gate=gate)
