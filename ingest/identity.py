"""Content addressing: an asset's id is the SHA-256 of its bytes.

The file is opened once, checked to be a regular, non-empty file *through
the open descriptor* (so a path swapped between check and read cannot slip a
FIFO or a device past us), then hashed in 1 MiB chunks.  ``O_NONBLOCK`` keeps
``open`` from hanging on a FIFO; it has no effect on regular files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ingest.errors import EMPTY_FILE, NOT_A_FILE, NOT_FOUND, TOO_LARGE, UNREADABLE, reject

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 32 << 30  # 32 GiB: an hour of 8-channel 192 kHz 24-bit PCM is ~16.6 GB


def quarantine_id(path: Path) -> str:
    """A stable key for inputs that have no content id (unreadable, missing, special)."""
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()


def content_id(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """SHA-256 hex of the file's bytes, or :class:`~ingest.errors.Rejected` if it has none to give."""
    path = Path(path)
    qid = quarantine_id(path)
    limit = max_bytes
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise reject(NOT_FOUND, f"no such file: {path}", quarantine_id=qid) from None
    except IsADirectoryError:
        raise reject(NOT_A_FILE, f"{path} is a directory", quarantine_id=qid) from None
    except OSError as exc:
        # ENXIO: a socket; EACCES/EPERM: permissions; EIO: the disk.
        raise reject(UNREADABLE, f"cannot open {path}: {exc.strerror}", quarantine_id=qid,
                     errno=exc.errno) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise reject(NOT_A_FILE, f"{path} is not a regular file", quarantine_id=qid,
                         mode=stat.filemode(st.st_mode))
        if st.st_size == 0:
            raise reject(EMPTY_FILE, f"{path} is empty (0 bytes)", quarantine_id=qid)
        if st.st_size > limit:
            raise reject(TOO_LARGE, f"{path} is {st.st_size} bytes, more than the {limit}-byte limit",
                         quarantine_id=qid, size=st.st_size, max_bytes=limit)
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError as exc:
        raise reject(UNREADABLE, f"cannot read {path}: {exc.strerror}", quarantine_id=qid,
                     errno=exc.errno) from None
    finally:
        os.close(fd)
