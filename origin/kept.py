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

The fast path does better still: it asks ``region`` for the file, which
checks with ``cachestat(2)`` (Linux 6.5) that every page of it is resident
and hands back a ``Region`` that ``origin.fastpath`` sends with
``sendfile(2)``: no buffer, no copy into user space, as nginx serves it.
A page evicted in the microseconds between the check and the send makes that
one send wait for the disk; that window is the whole of the risk.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
from collections import OrderedDict
from typing import Any

from origin.representation import Entry, Region, Variant

__all__ = ("KeptFiles", "Residency", "default_limit", "read_resident", "resident", "residency")

_CACHESTAT = 451  # the same number on every Linux architecture (asm-generic/unistd.h)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


class Residency:
    """Whether a file range is wholly in the page cache: ``cachestat(2)``, or unknown where it is missing."""

    def __init__(self) -> None:
        self._range = _Range()
        self._stat = _Stat()
        self._page = mmap.PAGESIZE
        self._call: Any = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.syscall
            call.restype = ctypes.c_long
            call.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
        except (OSError, AttributeError):
            return
        self._call = call
        self._args = (ctypes.addressof(self._range), ctypes.addressof(self._stat))
        probe = os.open(os.devnull, os.O_RDONLY)
        try:
            if self.resident(probe, 0, 1) is None:
                self._call = None  # ENOSYS (kernel before 6.5) or refused: no sendfile from kept files
        finally:
            os.close(probe)

    @property
    def available(self) -> bool:
        return self._call is not None

    def resident(self, fd: int, start: int, length: int) -> bool | None:
        """True when all of ``[start, start + length)`` is cached, False when not, None when it cannot tell."""
        if self._call is None:
            return None
        rng = self._range
        rng.off = start
        rng.len = length
        if self._call(_CACHESTAT, fd, self._args[0], self._args[1], 0) != 0:
            return None
        page = self._page
        return self._stat.nr_cache >= (start + length + page - 1) // page - start // page


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
        self.regions = 0  # entries handed to the fast path with a Region body, to send with sendfile

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

    def read(self, key: str, gate: Any, now: float, max_size: int) -> Entry | None:
        """The file's entry with its bytes, if kept under ``gate``, at most ``max_size`` bytes and wholly in
        the page cache; else None."""
        meta, fd = self._current(key, gate)
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

    def region(self, key: str, gate: Any, now: float) -> Entry | None:
        """The file's entry with a ``Region`` body, if kept under ``gate``.

        Where its pages are is not checked here: the sender checks the bytes
        it is about to send (``resident``), one range of a long file included.
        """
        if not residency().available:
            return None
        meta, fd = self._current(key, gate)
        if meta is None:
            return None
        self._items.move_to_end(key)
        self.regions += 1
        return _with_body(meta, Region(fd, 0, meta.identity.size), now, gate)

    def _current(self, key: str, gate: Any) -> tuple[Entry | None, int]:
        item = self._items.get(key)
        if item is None:
            return None, -1
        if item[0].gate != gate:  # re-published since: the descriptor may be another version's
            self.forget(key)
            return None, -1
        return item

    def close(self) -> None:
        while self._items:
            _, (_, fd) = self._items.popitem()
            os.close(fd)


_RESIDENCY: Residency | None = None


def residency() -> Residency:
    """The process's one ``Residency`` (made on first use; only the event loop's thread calls it)."""
    global _RESIDENCY
    if _RESIDENCY is None:
        _RESIDENCY = Residency()
    return _RESIDENCY


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
