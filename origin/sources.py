"""Where the origin reads published files: local disk (here) or S3 (``origin.s3source``).

A source answers ``resolve(scope, rel)`` with a validated ``Entry`` (plus an
open ``Body`` when the bytes are not cached) or ``None`` for "not served".
Entries are cached (``EntryCache``) and trusted for ``REVALIDATE_S`` seconds:
published assets are immutable, so a cached segment is served without
touching the disk, and a deleted asset stops being served within that window.
Segments and init segments past the window are vouched for by their asset's
gate (the descriptor, stat-ed at most once per window per asset) as long as
it is the same publication they were validated under.

All blocking filesystem work of a request (gate stat, stat, realpath check,
open, fstat, read) happens in ONE executor call, ``_load``: the event loop
never waits on the disk.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from origin.cache import EntryCache
from origin.kept import KeptFiles
from origin.representation import STATIC_COMPRESSIBLE, Entry, Kind, make_entry, static_type
from tonearm.core.storage import DESCRIPTOR

__all__ = ("Body", "Scope", "Source", "LocalSource", "REVALIDATE_S", "MAX_CACHED_FILE")

REVALIDATE_S = 1.0
MAX_CACHED_FILE = 4 * 1024 * 1024  # bigger files (single-file renditions) are streamed, never held whole
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Scope:
    """A served tree: one published asset (gated by its descriptor) or the static folder."""

    name: str  # cache key prefix: "a/<asset_id>" or "static"
    asset_id: str | None


class Body(Protocol):
    async def send(self, resp: web.StreamResponse, request: web.Request, start: int, end: int) -> None: ...
    def close(self) -> None: ...


class Source(Protocol):
    cache: EntryCache

    def peek(self, scope: Scope, rel: str, kind: Kind, now: float, *, sendable: bool = False) -> Entry | None: ...
    async def resolve(self, scope: Scope, rel: str, kind: Kind) -> tuple[Entry, Body | None] | None: ...
    async def keep_gates_fresh(self) -> None: ...
    async def ready(self) -> bool: ...
    async def close(self) -> None: ...


def content_type_of(kind: Kind, rel: str) -> tuple[str, bool] | None:
    """(Content-Type, compressible) of a file, None if the origin does not serve that type."""
    if kind is Kind.STATIC:
        ctype = static_type(rel)
        return (ctype, rel.lower().endswith(STATIC_COMPRESSIBLE)) if ctype else None
    return kind.content_type, kind.compressible


class FileBody:
    """An open local file sent with ``loop.sendfile`` or, where the loop lacks it (uvloop), by chunks."""

    __slots__ = ("_f",)

    def __init__(self, f: "os.PathLike[str] | object") -> None:
        self._f = f

    async def send(self, resp: web.StreamResponse, request: web.Request, start: int, end: int) -> None:
        loop = asyncio.get_running_loop()
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            await loop.sendfile(transport, self._f, start, end - start)  # type: ignore[arg-type]
            return
        except NotImplementedError:
            pass
        fd = self._f.fileno()  # type: ignore[attr-defined]
        pos = start
        while pos < end:
            chunk = await loop.run_in_executor(None, os.pread, fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise ConnectionResetError("file shrank while being sent")
            await resp.write(chunk)  # drains: a slow reader holds one chunk, not the file
            pos += len(chunk)

    def close(self) -> None:
        # Closing a regular file opened read-only does no I/O; it is safe on the loop.
        self._f.close()  # type: ignore[attr-defined]


class LocalSource:
    def __init__(self, published_root: Path, static_root: Path, cache: EntryCache, manifest_ttl: int) -> None:
        self.published_root = Path(published_root)
        self.static_root = Path(static_root)
        self.cache = cache
        self.manifest_ttl = manifest_ttl
        self.max_cached_file = MAX_CACHED_FILE  # bigger files are streamed (0: every body is)
        self.revalidate_s = REVALIDATE_S
        self._gates: dict[str, tuple[float, tuple[int, ...]]] = {}  # scope -> (loop time checked, gate version)
        self.kept = KeptFiles()  # descriptors of segments whose bytes the cache may have evicted
        self._seen: dict[str, float] = {}  # scope -> loop time a request last relied on its gate

    def peek(self, scope: Scope, rel: str, kind: Kind, now: float, *, sendable: bool = False) -> Entry | None:
        """The cached entry if it may be served now without touching the disk (its bytes held, still valid).

        ``now`` is the event loop's time.  This is the hot path of ``resolve``,
        and all of the fast path's (``origin.fastpath``) storage access.
        ``sendable``: the caller sends ``Region`` bodies (the fast path does),
        so a segment or single file whose bytes are not held but whose
        descriptor is kept is answered from it (by sendfile).  Held bytes win:
        head and body in one write beat write plus sendfile.
        """
        key = f"{scope.name}/{rel}"
        cached = self.cache.get(key)
        held = cached is not None and cached.identity.body is not None
        fresh = held and now - cached.checked < self.revalidate_s
        if fresh:
            return cached
        if not kind.immutable:
            return None
        # Segments and init segments never change within one publication of their asset, so the
        # asset's gate, checked within the window and unchanged since this entry was, vouches for them:
        # one stat per asset per window instead of one executor round trip per file.
        gate = self._gates.get(scope.name)
        if gate is None or now - gate[0] >= self.revalidate_s:
            return cached if fresh else None
        self._seen[scope.name] = now  # keep_gates_fresh re-checks it ahead of the window's end
        if held and gate[1] == cached.gate:
            return cached
        if sendable:  # sent by sendfile from the page cache, as nginx sends it: no copy through memory
            region = self.kept.region(key, gate[1])
            if region is not None:
                return region
        if held:
            return None
        revived = self.kept.read(key, gate[1], now, self.max_cached_file)  # evicted: read again
        if revived is not None:
            self.cache.put(revived)
        return revived

    async def resolve(self, scope: Scope, rel: str, kind: Kind) -> tuple[Entry, Body | None] | None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        hot = self.peek(scope, rel, kind, now)
        if hot is not None:
            return hot, None  # no disk access at all
        key = f"{scope.name}/{rel}"
        cached = self.cache.get(key)
        result = await loop.run_in_executor(None, self._load, scope, rel, kind, cached)
        if result is None:
            self.cache.drop(key)
            self.kept.forget(key)
            self._gates.pop(scope.name, None)
            return None
        entry, fobj, gate_version, fd = result
        entry.checked = now
        entry.gate = gate_version
        if gate_version is not None:
            if len(self._gates) > 10_000:
                self._gates.clear()
            self._gates[scope.name] = (now, gate_version)
        if entry is not cached:
            self.cache.put(entry)
        if fd is not None:
            self.kept.keep(entry, fd)
        return entry, (FileBody(fobj) if fobj is not None else None)

    def _paths(self, scope: Scope, rel: str) -> tuple[Path, Path | None]:
        if scope.asset_id is None:
            return self.static_root, None
        base = self.published_root / scope.asset_id
        return base, base / DESCRIPTOR

    def _load(self, scope: Scope, rel: str, kind: Kind, cached: Entry | None
              ) -> tuple[Entry, object | None, tuple[int, ...] | None, int | None] | None:
        """Executor: gate, stat, containment check, open, validators (re-read after open), maybe the bytes.

        Also returns the gate's version (descriptor mtime, inode, size): a re-published asset has a new one;
        and for a segment or init segment read whole, a duplicate of its descriptor for ``KeptFiles``.
        """
        base, gate = self._paths(scope, rel)
        path = os.path.join(base, rel)
        gate_version = None
        try:
            if gate is not None:
                gst = os.stat(gate)  # an asset is published iff its descriptor exists
                gate_version = (gst.st_mtime_ns, gst.st_ino, gst.st_size)
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            if cached is not None and cached.version == (st.st_mtime_ns, st.st_size, st.st_ino):
                if cached.identity.body is not None:
                    return cached, None, gate_version, None
                return cached, open(path, "rb"), gate_version, None  # noqa: SIM115 - closed by the Body
            # Symlinks must not lead out of the served tree: the static folder, or the asset's OWN folder
            # (published/<id>/, itself not a symlink): one asset's token must not reach another asset's bytes.
            if scope.asset_id is None:
                root = os.path.realpath(self.static_root)
            else:
                root = os.path.join(os.path.realpath(self.published_root), scope.asset_id)
            real = os.path.realpath(path)
            if not real.startswith(root + os.sep):
                return None
            f = open(real, "rb")  # noqa: SIM115
        except (OSError, ValueError):  # missing, not a directory, name too long, loop, NUL byte
            return None
        kept_fd: int | None = None
        try:
            fst = os.fstat(f.fileno())  # validators from the opened file, so headers match the bytes sent
            if not stat.S_ISREG(fst.st_mode):
                f.close()
                return None
            body = None
            if kind.immutable and scope.asset_id is not None and self.kept.limit > 0:
                kept_fd = os.dup(f.fileno())  # streamed files too: the fast path sends their ranges by sendfile
            if fst.st_size <= self.max_cached_file:
                body = f.read()
                f.close()
                if len(body) != fst.st_size:
                    if kept_fd is not None:
                        os.close(kept_fd)
                    return None  # changed under us: not a published file
            typed = content_type_of(kind, rel)
            if typed is None:
                f.close()
                if kept_fd is not None:
                    os.close(kept_fd)
                return None
            entry = make_entry(
                key=f"{scope.name}/{rel}",
                kind=kind,
                content_type=typed[0],
                version=(fst.st_mtime_ns, fst.st_size, fst.st_ino),
                mtime=fst.st_mtime,
                size=fst.st_size,
                etag=f'"{fst.st_mtime_ns:x}-{fst.st_size:x}"',
                body=body,
                path=real,
                manifest_ttl=self.manifest_ttl,
                compressible=typed[1],
            )
            return entry, (None if body is not None else f), gate_version, kept_fd
        except BaseException:
            f.close()
            if kept_fd is not None:
                os.close(kept_fd)
            raise

    async def keep_gates_fresh(self) -> None:
        """Re-check the gates of assets in use every quarter window, in one executor call, ahead of requests.

        Without it, when an asset's gate aged past the window every request for
        that asset found it stale at once and went to the executor (a herd of
        loads per asset per second, each waiting on the GIL: the p99).  A gate
        is still at most ``revalidate_s`` old when trusted, so a taken-down
        asset stops within that window as before.  Runs until cancelled.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.revalidate_s / 4)
            started = loop.time()
            names = [n for n, t in self._seen.items() if started - t < 4 * self.revalidate_s]
            if len(names) != len(self._seen):
                self._seen = {n: self._seen[n] for n in names}
            if not names:
                continue
            versions = await loop.run_in_executor(None, self._gate_versions, names)
            for name, version in zip(names, versions):
                if version is None:
                    self._gates.pop(name, None)  # gone: the next request loads (and answers 404)
                else:
                    self._gates[name] = (started, version)  # the check began no earlier than this

    def _gate_versions(self, names: list[str]) -> list[tuple[int, ...] | None]:
        """Executor: (mtime, inode, size) of each asset scope's descriptor, None where it is missing."""
        out: list[tuple[int, ...] | None] = []
        for name in names:
            try:
                st = os.stat(self.published_root / name.removeprefix("a/") / DESCRIPTOR)
                out.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except OSError:
                out.append(None)
        return out

    async def ready(self) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, os.path.isdir, self.published_root)

    async def close(self) -> None:
        self.kept.close()
