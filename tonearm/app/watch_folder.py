"""What a drop folder holds right now, and which of its files are complete.

A file arrives by being written, often slowly (an FTP upload, a copy over
SMB, a browser download), so "it exists" is not "it is complete".  The rule
here is the one the established drop-folder tools use: a file is taken once
its size, mtime and inode have not changed for ``[watch] settle_s`` seconds
of our own observation *and* its mtime is at least that old by the wall
clock (a writer that pauses shorter than the window never sees its file
taken half-written; one that renames into place is seen only after the
rename).  Temporary names (``*.part``, ``.*``, ``*.tmp``, ``*.crdownload``)
are never candidates: a tool that writes ``x.part`` and renames it to ``x``
is the well-behaved case.

Bounds, because a drop folder is an input like any other: folders are
walked at most ``[watch] max_depth`` levels down, a symlink is followed only
to a regular file inside the watched folder (never out of it, never to a
folder), a name longer than the file system's limits or a path longer than
``PATH_MAX`` is ignored, FIFOs and devices are ignored (opening one could
block), and the ``done/`` and ``rejected/`` folders the after-take policy
writes are never walked.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.names import printable

log = logging.getLogger("tonearm.watch")

__all__ = ("Seen", "Settler", "scan_folder", "ignored", "DONE_DIR", "REJECTED_DIR")

DONE_DIR, REJECTED_DIR = "done", "rejected"  # written by the after-take policy, never walked
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096


@dataclass(frozen=True)
class Seen:
    """One regular file as a listing saw it: ``key`` names it within its source, ``tag`` is what must not change."""

    key: str  # path relative to the watched folder (or an object key in a bucket)
    size: int
    tag: str  # mtime_ns:inode for a file, the ETag for an object
    mtime: float  # wall-clock seconds of the last change (the object's LastModified)


def ignored(name: str, patterns: tuple[str, ...]) -> bool:
    """Temporary or hidden names (``fnmatch``, case-sensitive, on the last path component)."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def scan_folder(root: Path, *, patterns: tuple[str, ...], max_depth: int) -> list[Seen]:
    """Every candidate file under ``root``, sorted by key; unreadable folders are logged and skipped."""
    real_root = Path(os.path.realpath(root))
    out: list[Seen] = []
    _walk(root, real_root, "", 0, patterns, max_depth, out)
    out.sort(key=lambda s: s.key)
    return out


def _walk(folder: Path, real_root: Path, prefix: str, depth: int, patterns: tuple[str, ...], max_depth: int,
          out: list[Seen]) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("watch: cannot list %s: %s", printable(folder), exc.strerror)
        return
    for entry in entries:
        name = entry.name
        key = prefix + name
        if ignored(name, patterns) or len(os.fsencode(name)) > MAX_NAME_BYTES:
            continue
        if len(os.fsencode(entry.path)) > MAX_PATH_BYTES:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = Path(os.path.realpath(entry.path))
                if real_root not in target.parents:
                    log.info("watch: %s leads outside the watched folder; not followed", printable(entry.path))
                    continue
                st = os.stat(target)
                if not stat.S_ISREG(st.st_mode):
                    continue  # folders inside are walked anyway; a link to one would only loop
        except OSError:
            continue  # vanished between listing and stat, or a dangling link
        if stat.S_ISDIR(st.st_mode):
            if name in (DONE_DIR, REJECTED_DIR) or depth + 1 > max_depth:
                continue  # the after-take policy's folders, at any level, and no deeper than allowed
            _walk(Path(entry.path), real_root, key + "/", depth + 1, patterns, max_depth, out)
        elif stat.S_ISREG(st.st_mode):
            out.append(Seen(key=key, size=st.st_size, tag=f"{st.st_mtime_ns}:{st.st_ino}", mtime=st.st_mtime))


class Settler:
    """Which candidates have been stable for ``settle_s``: fed every listing, answers the ones ready now.

    A candidate is ready when the same (size, tag) was seen for ``settle_s`` seconds by the monotonic clock
    and its mtime is at least ``settle_s`` old by the wall clock; a change restarts its window, a
    disappearance forgets it.  So a candidate is always seen unchanged by at least two listings (what a
    bucket's objects need: the same size and ETag twice).
    """

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._since: dict[str, tuple[int, str, float]] = {}  # key -> size, tag, first seen

    def observe(self, listing: list[Seen], *, complete: bool = True, now: float | None = None,
                wall: float | None = None) -> list[Seen]:
        """Record one listing (``complete``: it covers the whole source, so absent keys are gone)."""
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        ready: list[Seen] = []
        present = set()
        for s in listing:
            present.add(s.key)
            prev = self._since.get(s.key)
            if prev is None or prev[:2] != (s.size, s.tag):
                self._since[s.key] = (s.size, s.tag, now)
                continue
            if now - prev[2] >= self.settle_s and wall - s.mtime >= self.settle_s:
                ready.append(s)
        if complete:
            for key in [k for k in self._since if k not in present]:
                del self._since[key]
        return ready

    def forget(self, key: str) -> None:
        self._since.pop(key, None)

    @property
    def pending(self) -> int:
        """Candidates seen but not yet ready (the loop polls faster while there are any)."""
        return len(self._since)
