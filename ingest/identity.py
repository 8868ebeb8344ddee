"""Content addressing: an asset's id is the SHA-256 of its bytes.

The file is opened once, checked to be a regular, non-empty file *through
the open descriptor* (so a path swapped between check and read cannot slip a
FIFO or a device past us), then hashed in 1 MiB chunks.  ``O_NONBLOCK`` keeps
``open`` from hanging on a FIFO; it has no effect on regular files.

The same chunks are written to ``copy_to``: the pipeline's own copy of the
master, which every later stage reads.  Hash and bytes therefore always
agree; a file swapped or rewritten after hashing changes nothing we publish.
At most ``max_bytes`` are read, even from a file that grows while we read it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ingest.errors import EMPTY_FILE, NOT_A_FILE, NOT_FOUND, TOO_LARGE, UNREADABLE, reject
from ingest.names import printable

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 32 << 30  # 32 GiB: an hour of 8-channel 192 kHz 24-bit PCM is ~16.6 GB


class _CopyFailed(Exception):
    """Writing our copy failed; carries the OSError so it is not mistaken for an unreadable input."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def quarantine_id(path: Path) -> str:
    """A stable key for inputs that have no content id (unreadable, missing, special)."""
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()


def content_id(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, copy_to: BinaryIO | None = None) -> str:
    """SHA-256 hex of the file's bytes (copied to ``copy_to`` as they are hashed), or ``Rejected``."""
    path = Path(path)
    qid = quarantine_id(path)
    limit = max_bytes
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise reject(NOT_FOUND, f"no such file: {printable(path)}", quarantine_id=qid) from None
    except IsADirectoryError:
        raise reject(NOT_A_FILE, f"{printable(path)} is a directory", quarantine_id=qid) from None
    except OSError as exc:
        # ENXIO: a socket; EACCES/EPERM: permissions; EIO: the disk.
        raise reject(UNREADABLE, f"cannot open {printable(path)}: {exc.strerror}", quarantine_id=qid,
                     errno=exc.errno) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise reject(NOT_A_FILE, f"{printable(path)} is not a regular file", quarantine_id=qid,
                         mode=stat.filemode(st.st_mode))
        if st.st_size == 0:
            raise reject(EMPTY_FILE, f"{printable(path)} is empty (0 bytes)", quarantine_id=qid)
        if st.st_size > limit:
            raise reject(TOO_LARGE, f"{printable(path)} is {st.st_size} bytes, more than the {limit}-byte limit",
                         quarantine_id=qid, size=st.st_size, max_bytes=limit)
        digest = hashlib.sha256()
        total = 0
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(CHUNK):
                total += len(chunk)
                if total > limit:  # it grew past the limit while we read it
                    raise reject(TOO_LARGE, f"{printable(path)} grew past the {limit}-byte limit while being read",
                                 quarantine_id=qid, max_bytes=limit)
                digest.update(chunk)
                if copy_to is not None:
                    try:
                        copy_to.write(chunk)
                    except OSError as exc:  # our disk, not the input: the caller reports it (e.g. full)
                        raise _CopyFailed(exc) from exc
        if total == 0:
            raise reject(EMPTY_FILE, f"{printable(path)} is empty (0 bytes)", quarantine_id=qid)
        return digest.hexdigest()
    except _CopyFailed as failed:
        raise failed.error from None
    except OSError as exc:
        raise reject(UNREADABLE, f"cannot read {printable(path)}: {exc.strerror}", quarantine_id=qid,
                     errno=exc.errno) from None
    finally:
        os.close(fd)
