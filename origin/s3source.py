"""Serving published assets from S3-compatible storage.

Validators come from ``HeadObject`` (the object's ETag is strong: it changes
with the bytes) and are cached like local entries.  Small files that players
re-read (manifests, descriptor, init segments) are cached whole; media bytes
are fetched per request with ``GetObject Range`` so a 206 never pulls the
whole object, and ``IfMatch`` pins the bytes to the version whose headers
were sent.  boto3 is blocking, so every call runs in the loop's executor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from origin.cache import EntryCache
from origin.representation import Entry, Kind, make_entry
from origin.sources import REVALIDATE_S, Body, Scope, content_type_of
from tonearm.core.config import StorageConfig
from tonearm.core.s3storage import make_client, object_key
from tonearm.core.storage import DESCRIPTOR

__all__ = ("S3Source",)

CACHE_WHOLE = (Kind.PLAYLIST, Kind.MPD, Kind.DESCRIPTOR, Kind.INIT)
MAX_CACHED_OBJECT = 1024 * 1024
FETCH = 1024 * 1024  # bytes per GetObject when streaming a long range


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
    return False


class S3Body:
    __slots__ = ("_source", "_key", "_etag")

    def __init__(self, source: "S3Source", key: str, etag: str) -> None:
        self._source, self._key, self._etag = source, key, etag

    async def send(self, resp: web.StreamResponse, request: web.Request, start: int, end: int) -> None:
        loop = asyncio.get_running_loop()
        pos = start
        while pos < end:
            stop = min(end, pos + FETCH)
            chunk = await loop.run_in_executor(None, self._source.get_range, self._key, self._etag, pos, stop)
            await resp.write(chunk)
            pos = stop

    def close(self) -> None:
        return None


class S3Source:
    def __init__(self, scfg: StorageConfig, cache: EntryCache, manifest_ttl: int, static: Any,
                 client: Any | None = None) -> None:
        self.scfg = scfg
        self.cache = cache
        self.manifest_ttl = manifest_ttl
        self.static = static  # the static page and player files are always local
        self.client = client or make_client(scfg)
        self.revalidate_s = REVALIDATE_S
        self._gates: dict[str, float] = {}  # asset id -> loop time its descriptor was last seen

    def peek(self, scope: Scope, rel: str, kind: Kind, now: float, *, sendable: bool = False) -> Entry | None:
        """The cached entry if its bytes are held and it was validated within the window (no store call)."""
        if scope.asset_id is None:
            return self.static.peek(scope, rel, kind, now, sendable=sendable)
        cached = self.cache.get(f"{scope.name}/{rel}")
        if cached is None or cached.identity.body is None or now - cached.checked >= self.revalidate_s:
            return None
        return cached

    async def keep_gates_fresh(self) -> None:
        """Nothing to do ahead of requests: on S3 each entry is revalidated by its own request."""
        return None

    async def resolve(self, scope: Scope, rel: str, kind: Kind) -> tuple[Entry, Body | None] | None:
        if scope.asset_id is None:
            return await self.static.resolve(scope, rel, kind)
        key = f"{scope.name}/{rel}"
        loop = asyncio.get_running_loop()
        now = loop.time()
        cached = self.cache.get(key)
        if cached is None or now - cached.checked >= self.revalidate_s:
            gate_seen = now - self._gates.get(scope.asset_id, -1e18) < self.revalidate_s
            entry = await loop.run_in_executor(None, self._load, scope.asset_id, rel, kind, cached, gate_seen)
            if entry is None:
                self.cache.drop(key)
                return None
            if len(self._gates) > 10_000:
                self._gates.clear()
            if not gate_seen or rel == DESCRIPTOR:  # only a load that saw the descriptor vouches for the asset
                self._gates[scope.asset_id] = now
            entry.checked = now
            if entry is not cached:
                self.cache.put(entry)
            cached = entry
        if cached.identity.body is not None:
            return cached, None
        return cached, S3Body(self, object_key(self.scfg, scope.asset_id, rel), cached.identity.etag)

    def _load(self, asset_id: str, rel: str, kind: Kind, cached: Entry | None, gate_seen: bool) -> Entry | None:
        """Executor: descriptor gate (unless just seen), HeadObject, and for small re-read files the object."""
        bucket = self.scfg.s3_bucket
        key = object_key(self.scfg, asset_id, rel)
        try:
            if rel != DESCRIPTOR and not gate_seen:
                self.client.head_object(Bucket=bucket, Key=object_key(self.scfg, asset_id, DESCRIPTOR))
            head = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        etag = head["ETag"]
        if cached is not None and cached.version == (etag,):
            return cached
        size = head["ContentLength"]
        body = None
        if kind in CACHE_WHOLE and size <= MAX_CACHED_OBJECT:
            try:
                obj = self.client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
            body = obj["Body"].read()
            etag, size = obj["ETag"], len(body)
        typed = content_type_of(kind, rel)
        if typed is None:
            return None
        return make_entry(
            key=f"a/{asset_id}/{rel}", kind=kind, content_type=typed[0], version=(etag,),
            mtime=head["LastModified"].timestamp(), size=size, etag=etag, body=body, path=None,
            manifest_ttl=self.manifest_ttl, compressible=typed[1],
        )

    def get_range(self, key: str, etag: str, start: int, end: int) -> bytes:
        """Executor: one GetObject for bytes [start, end), pinned to the version whose headers went out."""
        obj = self.client.get_object(Bucket=self.scfg.s3_bucket, Key=key, Range=f"bytes={start}-{end - 1}",
                                     IfMatch=etag)
        data = obj["Body"].read()
        if len(data) != end - start:
            raise ConnectionResetError(f"object store returned {len(data)} bytes for {end - start}")
        return data

    async def ready(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: self.client.head_bucket(Bucket=self.scfg.s3_bucket))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        self.client.close()
