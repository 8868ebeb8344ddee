"""Where masters, quarantined files and published assets live.

The pipeline always writes an asset into a local staging directory first;
``publish`` then makes it visible in one step.  On local disk that step is a
directory rename (atomic on POSIX).  Object stores have no rename, so their
backend uploads media first, manifests next and the ``asset.json`` descriptor
last: the origin only serves assets whose descriptor exists, so a reader never
sees a half-published asset.

Layout under the storage root::

    masters/<id[:2]>/<id><ext>        accepted masters, immutable
    quarantine/<id>/master.bin        rejected inputs, kept with reason.json
    staging/<id>.<random>/            work in progress, never served
    published/<id>/asset.json         the publish marker, written last
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from tonearm.core.errors import TonearmError

DESCRIPTOR = "asset.json"
ASSET_ID_RE = re.compile(r"^[0-9a-f]{64}$")
MANIFEST_SUFFIXES = (".m3u8", ".mpd")


def is_asset_id(value: str) -> bool:
    return bool(ASSET_ID_RE.match(value))


def publish_order(files: list[str]) -> list[str]:
    """Media and init first, manifests next, the descriptor last."""

    def rank(name: str) -> int:
        if name.endswith(DESCRIPTOR):
            return 2
        return 1 if name.endswith(MANIFEST_SUFFIXES) else 0

    return sorted(files, key=lambda n: (rank(n), n))


class Storage(Protocol):
    root: Path  # local working area (staging, masters) even when publishing elsewhere

    def receive_master(self) -> tuple[BinaryIO, Path]: ...
    def keep_master(self, received: Path, asset_id: str, suffix: str) -> Path: ...
    def quarantine(self, src: Path | None, asset_id: str, reason: dict[str, Any]) -> Path: ...
    def new_staging(self, asset_id: str, owner: str) -> Path: ...
    def clean_stale_staging(self, asset_id: str, is_alive: Callable[[str], bool]) -> None: ...
    def publish(self, asset_id: str, staged: Path) -> None: ...
    def is_published(self, asset_id: str) -> bool: ...
    def read_descriptor(self, asset_id: str) -> dict[str, Any] | None: ...
    def list_published(self) -> list[str]: ...  # folder names that hold a descriptor
    def unpublish(self, asset_id: str, *, grace_s: float = 0.0) -> bool: ...  # descriptor first, then media
    def replace(self, asset_id: str, staged: Path) -> None: ...  # a rebuilt version swapped in (NotPublished)


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy via a temp file in the destination dir, then rename: no torn files."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.fchmod(fd, 0o644)  # published files are read by other users too (an nginx edge, a CDN sync)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def _safe_owner(owner: str) -> str:
    """``host:pid`` as a file-name part, reversibly (hex: host names have dots, the name is split on them)."""
    return owner.encode()[:100].hex()


def _staging_owner(name: str) -> str | None:
    """The owner of ``<id>.<owner>.<random>``; None for folders without one (older versions, crashed)."""
    parts = name.split(".")
    try:
        return bytes.fromhex(parts[1]).decode() if len(parts) == 3 else None
    except ValueError:
        return None


_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux 3.15+, glibc 2.28+)
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two directories in one step; False where the kernel, libc or filesystem cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


class NotPublished(TonearmError):
    """``replace`` of an asset that is not published (taken down while it was being rebuilt)."""

    code = "not_published"


class LocalStorage:
    """Everything on one local filesystem under ``root``."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """``create=False`` for readers (the origin): they must not make folders under the data dir."""
        self.root = Path(root).absolute()
        for sub in ("masters", "quarantine", "staging", "published") if create else ():
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def published_root(self) -> Path:
        return self.root / "published"

    def master_path(self, asset_id: str, suffix: str) -> Path:
        return self.root / "masters" / asset_id[:2] / f"{asset_id}{suffix}"

    def receive_master(self) -> tuple[BinaryIO, Path]:
        """An open, private temp file beside the masters: ingest copies a master into it while hashing."""
        fd, tmp = tempfile.mkstemp(dir=self.root / "masters", prefix=".incoming-")
        return os.fdopen(fd, "wb"), Path(tmp)

    def keep_master(self, received: Path, asset_id: str, suffix: str) -> Path:
        """Move a received copy to ``masters/<id[:2]>/<id><suffix>`` in one rename; a copy already there stays."""
        dst = self.master_path(asset_id, suffix)
        if dst.exists():
            received.unlink(missing_ok=True)
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(received, 0o644)
        os.replace(received, dst)
        return dst

    def quarantine(self, src: Path | None, asset_id: str, reason: dict[str, Any]) -> Path:
        """Keep a rejected master's bytes (our hashed copy; ``None``: there are none) with its reason."""
        folder = self.root / "quarantine" / asset_id
        target = folder / "master.bin"
        if src is None:
            reason = {**reason, "bytes_kept": False}
        elif not target.exists():
            try:
                _atomic_copy(src, target)
            except OSError as exc:  # unreadable input: keep the reason, say why the bytes are missing
                reason = {**reason, "copy_error": str(exc)}
        write_json_atomic(folder / "reason.json", reason)
        return folder

    def new_staging(self, asset_id: str, owner: str) -> Path:
        """A fresh ``staging/<id>.<owner>.<random>/``: the owner in the name tells whether its job is alive."""
        staged = Path(tempfile.mkdtemp(dir=self.root / "staging", prefix=f"{asset_id}.{_safe_owner(owner)}."))
        staged.chmod(0o755)  # mkdtemp makes 0700; the published asset must be world-readable
        return staged

    def publish(self, asset_id: str, staged: Path) -> None:
        final = self.published_root / asset_id
        if (staged / DESCRIPTOR).exists() is False:
            raise ValueError(f"staged asset {staged} has no {DESCRIPTOR}; refusing to publish")
        try:
            os.rename(staged, final)  # atomic; fails if final exists and is non-empty
        except OSError:
            if self.is_published(asset_id):  # someone else won the race: same bytes, same result
                shutil.rmtree(staged, ignore_errors=True)
                return
            raise

    def is_published(self, asset_id: str) -> bool:
        return (self.published_root / asset_id / DESCRIPTOR).is_file()

    def read_descriptor(self, asset_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.published_root / asset_id / DESCRIPTOR).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def list_published(self) -> list[str]:
        """Names of the folders under published/ that hold a descriptor (not checked to be asset ids)."""
        return sorted(p.name for p in self.published_root.iterdir() if (p / DESCRIPTOR).is_file())

    def unpublish(self, asset_id: str, *, grace_s: float = 0.0) -> bool:
        """Takedown: unlink the descriptor first (the origin serves an asset only while it exists), then move
        the folder out of ``published/`` in one rename and delete it.  False if nothing was published.
        ``grace_s`` is for object stores (see ``S3Storage.unpublish``): a local origin checks the descriptor
        before it opens any file, so nothing here waits."""
        folder = self.published_root / asset_id
        try:
            (folder / DESCRIPTOR).unlink()
        except FileNotFoundError:
            if not folder.exists():
                return False
        aside = self.root / "staging" / f"{asset_id}.{_safe_owner('takedown')}.{secrets.token_hex(4)}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True

    def replace(self, asset_id: str, staged: Path) -> None:
        """Publish a rebuilt version over the live one: both trees are swapped by one ``renameat2`` exchange,
        so a reader sees the old version or the new one, never a mix or a gap; the old tree is then deleted."""
        final = self.published_root / asset_id
        if not (staged / DESCRIPTOR).is_file():
            raise ValueError(f"staged asset {staged} has no {DESCRIPTOR}; refusing to publish")
        if not (final / DESCRIPTOR).is_file():  # taken down meanwhile: a rebuild must not publish it again
            shutil.rmtree(staged, ignore_errors=True)
            raise NotPublished(f"asset {asset_id} is not published (taken down?): nothing to replace")
        if not exchange_paths(staged, final):  # no atomic exchange here: two renames, a gap of one syscall
            old = staged.with_name(staged.name + ".old")
            os.rename(final, old)
            os.rename(staged, final)
            staged = old
        shutil.rmtree(staged, ignore_errors=True)

    def clean_stale_staging(self, asset_id: str, is_alive: Callable[[str], bool]) -> None:
        """Remove leftovers of crashed runs for this asset; a live owner's staging folder is never touched."""
        for p in (self.root / "staging").glob(f"{asset_id}.*"):
            owner = _staging_owner(p.name)
            if owner is None or not is_alive(owner):
                shutil.rmtree(p, ignore_errors=True)

