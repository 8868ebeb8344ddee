"""Receiving masters: ``POST /v1/uploads`` (the body is the master) and the shared receive path of tus.

The body is read in pieces of at most ``[api] read_chunk`` bytes, each written and hashed in a thread
(never the whole body in memory; aiohttp's reader stops reading the socket past its own small buffer),
and counted against ``[ingest] max_bytes``: past it the answer is 413 and the partial file is gone.
A complete master is renamed into ``<upload dir>/ready/<sha256><ext>`` and queued with its hash, so
the worker does not need another read to know its id; the same bytes twice are one file and one asset.
The sweep deletes a ready file once every job that reads it has ended.

    <upload dir>/incoming/<random>.part      a POST being received
    <upload dir>/tus/<upload id>/            a tus upload: data + info.json
    <upload dir>/ready/<sha256><ext>(.jobs)  queued masters and the ids of the jobs reading them

With ``[storage] backend = "s3"`` a complete master goes to the bucket (``<s3_prefix>uploads/<sha256><ext>``)
and the job reads it from there, so workers on other machines need no shared disk; the sweep deletes the
object once its jobs have ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tonearm.app.api.base import STATE, ApiState, expect_guard, job_json, needs
from tonearm.app.api.errors import ApiError, json_response
from tonearm.app.jobs import PRIORITY_RANGE, TERMINAL

__all__ = ("Receiver", "Sink", "add_routes", "check_filename", "query_options")

MAX_FILENAME = 255
BODY_IDLE_S = 60.0  # a body that stalls this long is cut (408): a trickling client cannot hold the receive forever
_SUFFIX_RE = re.compile(r"\.[a-z0-9]{1,8}")


def check_filename(name: str | None) -> str:
    """A master's name as given: a plain file name (no folders, no control characters), for people only."""
    if name is None or name == "":
        return "upload.bin"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME or any(c in name for c in "/\\") or \
            any(ord(c) < 32 or ord(c) == 127 for c in name) or name in (".", ".."):
        raise ApiError(400, "invalid_filename", f"filename: a plain file name of at most {MAX_FILENAME} bytes, "
                       "without '/', '\\' or control characters")
    return name


def query_options(request: web.Request) -> tuple[int, bool]:
    """``?priority=`` (an integer in the queue's range) and ``?force=true`` (re-ingest a taken-down asset)."""
    lo, hi = PRIORITY_RANGE
    raw = request.query.get("priority", "0")
    if not re.fullmatch(r"-?\d{1,3}", raw) or not lo <= int(raw) <= hi:
        raise ApiError(400, "invalid_priority", f"priority: an integer in [{lo}, {hi}]")
    return int(raw), parse_bool(request.query.get("force", "false"), "force")


def parse_bool(raw: Any, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", "", None):
        return False
    raise ApiError(400, "invalid_request", f"{name}: true or false")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the master is larger than the {limit}-byte limit ([ingest] max_bytes)",
                    headers={"Connection": "close"})


class Sink:
    """An open file and the SHA-256 of what was written to it, in order."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        self.f = open(path, "ab" if append else "xb")  # noqa: SIM115 - closed by close()
        self.hash = hashlib.sha256() if not append else None
        self.written = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        if self.hash is not None:
            self.hash.update(data)
        self.written += len(data)

    def close(self) -> None:
        self.f.close()


async def pump(request: web.Request, sink: Sink, *, room: int, chunk: int, on_bytes: Any = None) -> int:
    """Copy the request body into ``sink`` in pieces of at most ``chunk`` bytes; ``too_large`` past ``room``."""
    total = 0
    buf = bytearray()
    while True:
        try:
            data = await asyncio.wait_for(request.content.read(chunk - len(buf)), BODY_IDLE_S)
        except asyncio.TimeoutError:
            if buf:
                await asyncio.to_thread(sink.write, bytes(buf))
            raise ApiError(408, "body_timeout", f"no byte of the body arrived for {BODY_IDLE_S:g} s",
                           headers={"Connection": "close"}) from None
        except BaseException:
            if buf:  # the connection broke: what did arrive is written (tus resumes from it)
                await asyncio.to_thread(sink.write, bytes(buf))
            raise
        if data:
            total += len(data)
            if total > room:
                raise too_large(request.app[STATE].cfg.ingest.max_bytes)
            buf += data
        if buf and (not data or len(buf) >= chunk):
            piece, buf = bytes(buf), bytearray()
            await asyncio.to_thread(sink.write, piece)
            if on_bytes is not None:
                on_bytes(len(piece))
        if not data:
            return total


class Receiver:
    """The upload folders of one API process and the step from received bytes to a queued job."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.root = state.cfg.upload_dir
        self._lock = threading.Lock()
        for sub in ("incoming", "tus", "ready"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def new_part(self) -> Path:
        return self.root / "incoming" / f"{secrets.token_hex(16)}.part"

    def queue(self, received: Path, digest: str, filename: str, *, priority: int, force: bool) -> Any:
        """Rename a complete master into ready/ under its hash and submit it (thread)."""
        suffix = Path(filename).suffix.lower()
        ready = self.root / "ready" / f"{digest}{suffix if _SUFFIX_RE.fullmatch(suffix) else '.bin'}"
        with self._lock:  # the sweep must not delete a ready file between this rename and its job's note
            return self._queue_locked(received, ready, digest, filename, priority=priority, force=force)

    def _queue_locked(self, received: Path, ready: Path, digest: str, filename: str, *, priority: int,
                      force: bool) -> Any:
        os.replace(received, ready)  # the same bytes under the same name: a second copy replaces the first
        source = str(ready)
        try:
            if self.state.cfg.storage.backend == "s3":  # workers on other machines read it from the bucket
                source = self._to_bucket(ready)
            job = self.state.queue.submit(source, filename=filename, priority=priority, origin="api",
                                          force=force, asset_id=digest)
        except BaseException:
            if not self._readers(ready):
                ready.unlink(missing_ok=True)
                self._drop_object(ready)
            raise
        with open(f"{ready}.jobs", "a", encoding="utf-8") as f:
            f.write(job.id + "\n")
        return job

    def _to_bucket(self, ready: Path) -> str:
        """Upload a received master to ``<s3_prefix>uploads/<sha256><ext>`` (multipart, bounded memory); the
        local copy goes, a ``.s3`` note keeps the object's URI for the sweep."""
        scfg = self.state.cfg.storage
        key = f"{scfg.s3_prefix.strip('/') + '/' if scfg.s3_prefix.strip('/') else ''}uploads/{ready.name}"
        self.state.storage.client.upload_file(str(ready), scfg.s3_bucket, key)
        uri = f"s3://{scfg.s3_bucket}/{key}"
        Path(f"{ready}.s3").write_text(uri, encoding="utf-8")
        ready.unlink()
        return uri

    def _drop_object(self, ready: Path) -> None:
        note = Path(f"{ready}.s3")
        if note.exists():
            bucket, _, key = note.read_text(encoding="utf-8")[5:].partition("/")
            self.state.storage.client.delete_object(Bucket=bucket, Key=key)
            note.unlink()

    def _readers(self, ready: Path) -> list[str]:
        try:
            return Path(f"{ready}.jobs").read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return []

    def sweep(self, now: float | None = None) -> int:
        """Delete what nobody needs any more; the number of entries removed."""
        now = time.time() if now is None else now
        expiry = self.state.cfg.api.tus_expiry
        removed = 0
        for part in (self.root / "incoming").glob("*.part"):
            if now - part.stat().st_mtime > expiry:  # left by a process that died mid-upload
                part.unlink(missing_ok=True)
                removed += 1
        for folder in (self.root / "tus").iterdir():
            try:
                info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
                expired = now > info["expires_at"]  # a complete one too: only its job id was left for HEAD
            except (OSError, ValueError, KeyError):
                expired = now - folder.stat().st_mtime > expiry
            if expired:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for orphan in (self.root / "ready").iterdir():  # renamed, but the process died before its job was noted
            with self._lock:
                if orphan.suffix not in (".jobs", ".s3") and not Path(f"{orphan}.jobs").exists() and \
                        now - orphan.stat().st_mtime > expiry:
                    orphan.unlink(missing_ok=True)
                    removed += 1
        for jobs_file in (self.root / "ready").glob("*.jobs"):
            with self._lock:
                ids = jobs_file.read_text(encoding="utf-8").split() if jobs_file.exists() else []
                jobs = [self.state.queue.get(i) for i in ids]
                if ids and all(j is None or j.state in TERMINAL for j in jobs):
                    ready = Path(str(jobs_file)[:-len(".jobs")])
                    ready.unlink(missing_ok=True)
                    self._drop_object(ready)
                    jobs_file.unlink(missing_ok=True)
                    removed += 1
        return removed


@needs("ingest")
async def post_upload(request: web.Request) -> web.Response:
    """The body is the master: streamed to disk, hashed, queued; 202 with the job."""
    state: ApiState = request.app[STATE]
    filename = check_filename(request.query.get("filename"))
    priority, force = query_options(request)
    if request.content_type.startswith("multipart/"):
        raise ApiError(415, "unsupported_media_type", "send the master's bytes as the body, not a form")
    limit = state.cfg.ingest.max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)  # refused before a byte is read
    receiver: Receiver = state.uploads
    part = receiver.new_part()
    sink = await asyncio.to_thread(Sink, part)
    metric = state.metrics.upload_bytes.labels("post")
    try:
        try:
            total = await pump(request, sink, room=limit, chunk=state.cfg.api.read_chunk, on_bytes=metric.inc)
        finally:
            await asyncio.to_thread(sink.close)
        if total == 0:
            raise ApiError(400, "empty_file", "the body is empty: send the master's bytes")
        job = await state.run(receiver.queue, part, sink.hash.hexdigest(), filename, priority=priority, force=force)
    except BaseException as exc:
        state.metrics.uploads.labels("post", getattr(exc, "code", "aborted")).inc()
        raise
    finally:
        part.unlink(missing_ok=True)
    state.metrics.uploads.labels("post", "queued").inc()
    return json_response({"job": job_json(job)}, status=202,
                         headers={"Location": f"/v1/jobs/{job.id}"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/uploads", post_upload, expect_handler=expect_guard)
