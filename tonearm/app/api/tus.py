"""Resumable uploads: the tus 1.0.0 protocol (core, creation, termination, expiration).

    OPTIONS /v1/tus           what the server speaks (public, for discovery)
    POST    /v1/tus           create: Upload-Length (at most [ingest] max_bytes), Upload-Metadata filename
    HEAD    /v1/tus/<id>      Upload-Offset: how much arrived, so a client resumes from there
    PATCH   /v1/tus/<id>      application/offset+octet-stream at exactly Upload-Offset; appended
    DELETE  /v1/tus/<id>      termination: the partial upload is deleted

An upload is ``<upload dir>/tus/<id>/data`` and ``info.json``; its offset is the data file's size, so
what a broken connection delivered is kept and a restarted API resumes it.  The SHA-256 follows the
appends in this process; after a restart it is recomputed from the file once the last byte arrives.
Only the key that created an upload (or an admin key) sees it.  An upload idle past ``[api]
tus_expiry`` is deleted (``Upload-Expires`` says when).  The last PATCH queues the master and answers
``Tonearm-Job-Id``; HEAD repeats it, so a client that lost that answer finds its job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import shutil
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import ClientError, web

from tonearm.app.api.base import API_KEY, STATE, ApiState, expect_guard, needs, public
from tonearm.app.api.errors import ApiError
from tonearm.app.api.uploads import Sink, check_filename, parse_bool, pump
from tonearm.app.jobs import PRIORITY_RANGE
from tonearm.core.storage import write_json_atomic

__all__ = ("add_routes", "TUS_VERSION", "parse_metadata")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_META_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_META_PAIRS = 16
BASE = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


def parse_metadata(header: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (the value may be absent)."""
    out: dict[str, str] = {}
    pairs = [p.strip() for p in header.split(",") if p.strip()]
    if len(pairs) > MAX_META_PAIRS:
        raise ApiError(400, "invalid_metadata", f"Upload-Metadata: at most {MAX_META_PAIRS} pairs", headers=BASE)
    for pair in pairs:
        key, _, value = pair.partition(" ")
        if not _META_KEY_RE.fullmatch(key) or key in out:
            raise ApiError(400, "invalid_metadata", "Upload-Metadata: keys are 1-64 ASCII letters, digits, '_.-', "
                           "each once", headers=BASE)
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(400, "invalid_metadata", f"Upload-Metadata: the value of {key!r} is not base64 of "
                           "UTF-8 text", headers=BASE) from None
    return out


class Uploads:
    """The tus folders, a lock and the running hash per upload (this process)."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.root = state.cfg.upload_dir / "tus"
        self.locks: dict[str, asyncio.Lock] = {}
        self.hashes: dict[str, tuple[Any, int]] = {}  # upload id -> (sha256 so far, bytes it covers)

    def folder(self, upload_id: str) -> Path:
        return self.root / upload_id

    def create(self, length: int, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        upload_id = secrets.token_hex(16)
        folder = self.folder(upload_id)
        folder.mkdir(parents=True)
        (folder / "data").touch()
        info = {**meta, "length": length, "created_at": time.time(),
                "expires_at": time.time() + self.state.cfg.api.tus_expiry, "job_id": None}
        write_json_atomic(folder / "info.json", info)
        self.hashes[upload_id] = (hashlib.sha256(), 0)
        return upload_id, info

    def load(self, request: web.Request) -> tuple[str, dict[str, Any], int]:
        """(id, info, offset) of the caller's own live upload, else 404 (an expired one is gone too)."""
        upload_id = request.match_info["upload_id"]
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise ApiError(404, "upload_not_found", "no such upload", headers=BASE)
        folder = self.folder(upload_id)
        try:
            info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ApiError(404, "upload_not_found", "no such upload", headers=BASE) from None
        key = request[API_KEY]
        if (info.get("key_id") != key.id and "admin" not in key.scopes) or time.time() > info["expires_at"]:
            raise ApiError(404, "upload_not_found", "no such upload (or it expired)", headers=BASE)
        offset = info["length"] if info.get("job_id") else (folder / "data").stat().st_size
        return upload_id, info, offset

    def touch(self, upload_id: str, info: dict[str, Any]) -> dict[str, Any]:
        info = {**info, "expires_at": time.time() + self.state.cfg.api.tus_expiry}
        write_json_atomic(self.folder(upload_id) / "info.json", info)
        return info

    def digest(self, upload_id: str, length: int) -> str:
        """The SHA-256 of the complete data: the running hash if it covers every byte, else read again."""
        running = self.hashes.pop(upload_id, None)
        if running is not None and running[1] == length:
            return running[0].hexdigest()
        h = hashlib.sha256()
        with open(self.folder(upload_id) / "data", "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    def finish(self, upload_id: str, info: dict[str, Any]) -> Any:
        """Queue the complete master (thread); the job id stays in info.json for HEAD."""
        digest = self.digest(upload_id, info["length"])
        try:
            job = self.state.uploads.queue(self.folder(upload_id) / "data", digest, info["filename"],
                                           priority=info["priority"], force=info["force"])
        except BaseException:
            shutil.rmtree(self.folder(upload_id), ignore_errors=True)
            raise
        write_json_atomic(self.folder(upload_id) / "info.json", {**info, "job_id": job.id})
        self.locks.pop(upload_id, None)
        return job


def _expires(info: dict[str, Any]) -> str:
    return formatdate(info["expires_at"], usegmt=True)


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(412, "tus_version_unsupported", f"send Tus-Resumable: {TUS_VERSION}",
                       headers={**BASE, "Tus-Version": TUS_VERSION})


def _uploads(request: web.Request) -> Uploads:
    return request.app[TUS]


@public
async def options(request: web.Request) -> web.Response:
    cfg = request.app[STATE].cfg
    return web.Response(status=204, headers={**BASE, "Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
                                             "Tus-Max-Size": str(cfg.ingest.max_bytes)})


@needs("ingest")
async def create(request: web.Request) -> web.Response:
    _check_version(request)
    state: ApiState = request.app[STATE]
    raw = request.headers.get("Upload-Length", "")
    if not raw.isdigit() or len(raw) > 20:
        raise ApiError(400, "invalid_upload_length", "Upload-Length: the master's size in bytes (deferred lengths "
                       "are not supported)", headers=BASE)
    length = int(raw)
    if length > state.cfg.ingest.max_bytes:
        raise ApiError(413, "too_large", f"Upload-Length is more than the {state.cfg.ingest.max_bytes}-byte limit "
                       "([ingest] max_bytes)", headers=BASE)
    if length == 0:
        raise ApiError(400, "empty_file", "Upload-Length is 0: a master has bytes", headers=BASE)
    if request.content_length:
        raise ApiError(400, "invalid_request", "creation-with-upload is not supported: POST without a body, "
                       "then PATCH", headers=BASE)
    meta = parse_metadata(request.headers.get("Upload-Metadata", ""))
    lo, hi = PRIORITY_RANGE
    priority = meta.get("priority", "0")
    if not re.fullmatch(r"-?\d{1,3}", priority) or not lo <= int(priority) <= hi:
        raise ApiError(400, "invalid_priority", f"metadata priority: an integer in [{lo}, {hi}]", headers=BASE)
    fields = {"filename": check_filename(meta.get("filename") or meta.get("name")), "priority": int(priority),
              "force": parse_bool(meta.get("force", "false"), "force"), "key_id": request[API_KEY].id}
    upload_id, info = await state.run(_uploads(request).create, length, fields)
    return web.Response(status=201, headers={**BASE, "Location": f"/v1/tus/{upload_id}",
                                             "Upload-Expires": _expires(info)})


@needs("ingest")
async def head(request: web.Request) -> web.Response:
    _check_version(request)
    uploads = _uploads(request)
    _, info, offset = await request.app[STATE].run(uploads.load, request)
    headers = {**BASE, "Upload-Offset": str(offset), "Upload-Length": str(info["length"]),
               "Upload-Expires": _expires(info)}
    if info.get("job_id"):
        headers["Tonearm-Job-Id"] = info["job_id"]
    return web.Response(status=200, headers=headers)


@needs("ingest")
async def patch(request: web.Request) -> web.Response:
    _check_version(request)
    state: ApiState = request.app[STATE]
    uploads = _uploads(request)
    if request.headers.get("Content-Type") != "application/offset+octet-stream":
        raise ApiError(415, "unsupported_media_type", "PATCH needs Content-Type: application/offset+octet-stream",
                       headers=BASE)
    upload_id, info, offset = await state.run(uploads.load, request)
    lock = uploads.locks.setdefault(upload_id, asyncio.Lock())
    if lock.locked():
        raise ApiError(423, "upload_locked", "another PATCH of this upload is still running", headers=BASE)
    async with lock:
        upload_id, info, offset = await state.run(uploads.load, request)  # again, under the lock
        if request.headers.get("Upload-Offset") != str(offset):
            raise ApiError(409, "upload_offset_mismatch", f"Upload-Offset must be {offset} (HEAD tells it)",
                           headers={**BASE, "Upload-Offset": str(offset)})
        if info.get("job_id"):
            raise ApiError(409, "upload_complete", "the upload is complete", headers=BASE)
        room = info["length"] - offset
        if request.content_length is not None and request.content_length > room:
            raise ApiError(413, "too_large", f"the body goes past Upload-Length ({room} bytes remain)",
                           headers={**BASE, "Connection": "close"})
        sink = await asyncio.to_thread(Sink, uploads.folder(upload_id) / "data", append=True)
        running = uploads.hashes.get(upload_id)
        sink.hash = running[0] if running is not None and running[1] == offset else None
        if sink.hash is None:
            uploads.hashes.pop(upload_id, None)  # recomputed from the file at the end
        metric = state.metrics.upload_bytes.labels("tus")
        try:
            await pump(request, sink, room=room, chunk=state.cfg.api.read_chunk, on_bytes=metric.inc)
        except ApiError as exc:
            if exc.status == 408:  # stalled: the bytes that came are kept, the client resumes from HEAD
                raise ApiError(408, "body_timeout", str(exc), headers={**BASE, "Connection": "close"}) from None
            if exc.status == 413:  # past Upload-Length: the bytes up to it are kept, the client is told
                raise ApiError(413, "too_large", "the body goes past Upload-Length", headers=BASE) from None
            raise
        except (ConnectionError, ClientError, asyncio.IncompleteReadError):
            pass  # the connection broke: what arrived is kept and HEAD tells how much
        finally:
            await asyncio.to_thread(sink.close)
            if sink.hash is not None:
                uploads.hashes[upload_id] = (sink.hash, offset + sink.written)
        offset += sink.written
        info = await state.run(uploads.touch, upload_id, info)
        headers = {**BASE, "Upload-Offset": str(offset), "Upload-Expires": _expires(info)}
        if offset == info["length"]:
            job = await state.run(uploads.finish, upload_id, info)
            state.metrics.uploads.labels("tus", "queued").inc()
            headers["Tonearm-Job-Id"] = job.id
        return web.Response(status=204, headers=headers)


@needs("ingest")
async def terminate(request: web.Request) -> web.Response:
    _check_version(request)
    state: ApiState = request.app[STATE]
    uploads = _uploads(request)
    upload_id, _, _ = await state.run(uploads.load, request)
    await state.run(shutil.rmtree, uploads.folder(upload_id), True)
    uploads.hashes.pop(upload_id, None)
    uploads.locks.pop(upload_id, None)
    return web.Response(status=204, headers=BASE)


TUS: web.AppKey[Uploads] = web.AppKey("tonearm_tus", Uploads)


def add_routes(app: web.Application) -> None:
    app[TUS] = Uploads(app[STATE])
    r = app.router
    r.add_route("OPTIONS", "/v1/tus", options)
    r.add_post("/v1/tus", create)
    r.add_route("HEAD", "/v1/tus/{upload_id}", head)
    r.add_patch("/v1/tus/{upload_id}", patch, expect_handler=expect_guard)
    r.add_delete("/v1/tus/{upload_id}", terminate)
