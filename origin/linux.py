"""``cachestat(2)`` (Linux 6.5), which the ``os`` module lacks, through ctypes.

It serves the fast path's sendfile (``origin.fastpath``, ``origin.kept``):
it tells whether the pages about to be sent are in the page cache, so that
``sendfile`` does not wait for the disk on the event loop (``origin.kept``
states the one window left).  Where it is
missing (older kernels) ``available`` is False and kept files are read into
memory as before.  (``send(MSG_MORE)`` for the header block was tried, also
through ctypes, and measured no different from a plain write: not kept.)
"""

from __future__ import annotations

import ctypes
import mmap
import os
from typing import Any

__all__ = ("Residency", "residency")

_LIBC: Any = None
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    pass

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
        if _LIBC is None:
            return
        call = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_uint, use_errno=True)(("syscall", _LIBC))
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


_RESIDENCY: Residency | None = None


def residency() -> Residency:
    """The process's one ``Residency`` (made on first use; only the event loop's thread calls it)."""
    global _RESIDENCY
    if _RESIDENCY is None:
        _RESIDENCY = Residency()
    return _RESIDENCY
