"""Why the catalog cannot be used, as typed errors whose message names the file and what to do.

``CatalogError`` (``catalog_unreadable``): not a database, truncated, another schema, a directory in
its place.  ``CatalogFull`` (``disk_full``): SQLITE_FULL, ENOSPC, no inode left.  Both are also
``sqlite3.DatabaseError``, so code that tolerates SQLite errors keeps doing so.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

from tonearm.core.errors import TonearmError

__all__ = ("CatalogError", "CatalogFull", "filesystem_of", "out_of_space", "translate_error", "REBUILD_HINT")

REBUILD_HINT = "run 'tonearm catalog rebuild' to move it aside and recreate it from the published assets"


class CatalogError(TonearmError, ValueError, sqlite3.DatabaseError):
    """The catalog file cannot be used; the message names the file and says what to do.

    ``code`` is stable: ``catalog_unreadable`` (not a database, corrupt, another schema, a
    directory in its place) here, ``disk_full`` in ``CatalogFull``.  It is also a
    ``sqlite3.DatabaseError``, so code that tolerates SQLite errors keeps doing so.
    """

    code = "catalog_unreadable"

    def __init__(self, path: Path | str, reason: str, hint: str = REBUILD_HINT) -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        return f"catalog {self.path} is unreadable ({self.reason}): {self.hint}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: worker processes hand it to the parent
        return (type(self), (self.path, self.reason, self.hint))


class CatalogFull(CatalogError):
    """No space left on the filesystem holding the catalog (SQLITE_FULL, ENOSPC, no inode left)."""

    code = "disk_full"

    def _message(self) -> str:
        return (f"catalog {self.path} cannot be written: the disk is full ({self.reason}): "
                f"free space on {filesystem_of(self.path)} and run again")


def filesystem_of(path: Path | str) -> Path:
    """The mount point of the filesystem that holds (or would hold) ``path`` (symlinks followed)."""
    p = Path(os.path.realpath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def out_of_space(path: Path | str, *, margin: int = 128 * 1024) -> bool:
    """True when the filesystem holding ``path`` has (almost) no block or no inode left."""
    try:
        st = os.statvfs(filesystem_of(path))
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return free * st.f_frsize < margin or (st.f_files > 0 and st.f_favail == 0)


def translate_error(path: Path, exc: BaseException) -> CatalogError | None:
    """The ``CatalogError`` an SQLite or OS error on the catalog stands for; None: not ours to explain."""
    if isinstance(exc, CatalogError):
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return CatalogFull(path, exc.strerror or str(exc))
        return None
    if not isinstance(exc, sqlite3.Error):
        return None
    msg = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL or "database or disk is full" in msg:
        return CatalogFull(path, msg)
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and out_of_space(path):
        return CatalogFull(path, msg)  # growing the WAL index or creating a file failed for want of space
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_IOERR):
        return CatalogError(path, msg)
    if primary == sqlite3.SQLITE_CANTOPEN:
        return CatalogError(path, _cantopen_reason(path, msg))
    if primary == sqlite3.SQLITE_READONLY:
        return CatalogError(path, msg, hint="make it and its folder writable for this user and run again")
    if "no such table" in msg or "no such column" in msg:
        return CatalogError(path, f"unexpected schema: {msg}")
    return None


def _cantopen_reason(path: Path, msg: str) -> str:
    if path.is_dir():
        return f"{msg}: it is a directory"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{msg}: permission denied"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{msg}: its folder {path.parent} is not writable (SQLite creates -wal and -shm files beside it)"
    return msg
