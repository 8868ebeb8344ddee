"""Expand command-line paths into the inputs to ingest, in a stable order.

Arguments keep their order; folders are walked recursively with entries
sorted by name, so the same tree always yields the same sequence.  Inputs
that can be rejected without opening them are rejected here:

* a path that does not exist (or a dangling symlink): ``not_found``;
* a symlink inside an input folder whose target lies outside that folder:
  ``symlink_outside_input``.  It is never followed and never copied, so a
  folder cannot smuggle in ``/etc/shadow`` or another tenant's media;
* a FIFO, socket or device: ``not_a_file`` (opening a FIFO could block).

A symlink named directly on the command line is followed: the person chose
it.  Inside folders, symlinks to files within the folder are ingested (the
same bytes dedupe by content id), symlinks to folders within it are skipped
(their files are already walked; this also rules out loops), and names
starting with "." (``.DS_Store``, AppleDouble ``._x`` files, ``.git``) are
OS or tool metadata and are skipped.

Discovery-level rejections are returned as items carrying their error; the application records them
(``tonearm.app.pipeline.reject_unread``) as a ``reason.json`` without
bytes (there are none to keep, or they must not be copied), under
``quarantine/<quarantine_id>/`` where the id is the SHA-256 of the absolute
path: a re-run rewrites the same record instead of adding one.  Nothing in
the input is modified or deleted.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import NOT_A_FILE, NOT_FOUND, SYMLINK_OUTSIDE_INPUT, UNREADABLE
from ingest.identity import quarantine_id
from ingest.names import printable
from tonearm.core.model import JobError

log = logging.getLogger("tonearm.ingest")


@dataclass(frozen=True)
class Item:
    path: Path
    error: JobError | None = None


def _reject(path: Path, code: str, message: str, **details: object) -> Item:
    return Item(path, JobError(code=code, message=message,
                               details={"quarantine_id": quarantine_id(path), **details}))


def _special(path: Path, st: os.stat_result) -> Item:
    return _reject(path, NOT_A_FILE, f"{printable(path)} is not a regular file", mode=stat.filemode(st.st_mode))


def discover(paths: list[Path]) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()

    def add(item: Item) -> None:
        key = os.path.abspath(item.path)
        if key not in seen:
            seen.add(key)
            items.append(item)

    for arg in map(Path, paths):
        try:
            st = os.stat(arg)  # follows a symlink given as an argument
        except FileNotFoundError:
            add(_reject(arg, NOT_FOUND, f"no such file or folder: {printable(arg)}"))
            continue
        except OSError as exc:
            add(Item(arg))  # let content_id report it as unreadable, with the OS's reason
            log.info("cannot stat %s: %s", printable(arg), exc)
            continue
        if stat.S_ISDIR(st.st_mode):
            for item in _walk(arg, Path(os.path.realpath(arg)), arg):
                add(item)
        elif stat.S_ISREG(st.st_mode):
            add(Item(arg))
        else:
            add(_special(arg, st))
    return items


def _walk(folder: Path, root: Path, arg: Path) -> list[Item]:
    out: list[Item] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:  # an unlistable folder: report it instead of silently skipping its files
        return [Item(folder, JobError(code=UNREADABLE, message=f"cannot list {printable(folder)}: {exc.strerror}",
                                      details={"quarantine_id": quarantine_id(folder), "errno": exc.errno}))]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            target = Path(os.path.realpath(path))
            if target != root and root not in target.parents:
                out.append(_reject(path, SYMLINK_OUTSIDE_INPUT, f"{printable(path)} is a symlink leading outside "
                                   f"the input folder {printable(arg)}; not followed", input_folder=printable(arg)))
            elif not target.exists():
                out.append(_reject(path, NOT_FOUND, f"{printable(path)} is a dangling symlink"))
            elif target.is_file():
                out.append(Item(path))
            elif not target.is_dir():
                out.append(_special(path, target.stat()))
            continue  # symlinked folders inside the input: already walked
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            out.append(Item(path))
            continue
        if stat.S_ISDIR(st.st_mode):
            out.extend(_walk(path, root, arg))
        elif stat.S_ISREG(st.st_mode):
            out.append(Item(path))
        else:
            out.append(_special(path, st))
    return out
