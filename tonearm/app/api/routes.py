"""Jobs and assets: submit from the bucket, list, follow, cancel; look up, take down, repackage.

Takedown order: the tombstone and its ``taken_down`` event first (``JobQueue.take_down``: from then on
no submit of these bytes publishes them again without ``force``), then live jobs on the asset are
cancelled, then ``Storage.unpublish``, which
deletes the descriptor before the media, so the origin stops serving the asset at its next check.
A repeated DELETE is harmless: the tombstone exists, nothing is left to unpublish.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from origin.sources import REVALIDATE_S
from tonearm.app.api.base import STATE, ApiState, job_json, needs, public
from tonearm.app.api.errors import ApiError, json_response
from tonearm.app.api.openapi import document
from tonearm.app.api.uploads import check_filename, parse_bool
from tonearm.app.jobs import PRIORITY_RANGE, TERMINAL, JobNotFound, JobState
from tonearm.core.s3storage import published_prefix
from tonearm.core.storage import is_asset_id

__all__ = ("add_routes", "check_source")

JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_KEY = 1024
MAX_LIST = 500


def check_source(state: ApiState, raw: Any) -> str:
    """An object key in the configured bucket, as ``s3://<bucket>/<key>``: no other bucket, no URL of any
    other kind, no ``.``/``..`` segments, no control characters, nothing under the published tree."""
    scfg = state.cfg.storage
    if scfg.backend != "s3" or not scfg.s3_bucket:
        raise ApiError(400, "no_bucket", "sources in a bucket need [storage] backend = 's3'; upload the master "
                       "instead (POST /v1/uploads or tus)")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_KEY + len(scfg.s3_bucket) + 6:
        raise ApiError(400, "invalid_source", f"source: an object key of at most {MAX_KEY} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ApiError(400, "invalid_source", "source: control characters are not allowed")
    key = raw
    if raw.startswith("s3://"):
        bucket, _, key = raw[5:].partition("/")
        if bucket != scfg.s3_bucket:
            raise ApiError(400, "foreign_bucket", "source: only objects in the configured bucket can be ingested")
    elif "://" in raw or raw.startswith("//") or ":" in raw.split("/", 1)[0]:
        raise ApiError(400, "invalid_source", "source: an object key or s3://<bucket>/<key>, not a URL")
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ApiError(400, "invalid_source", "source: a plain object key (no leading '/', no empty, '.' or '..' "
                       "segments, no backslashes)")
    if key.startswith(published_prefix(scfg)):
        raise ApiError(400, "invalid_source", "source: objects of published assets are not masters")
    return f"s3://{scfg.s3_bucket}/{key}"


def _head(state: ApiState, uri: str) -> int:
    """The object's size (thread); 404 if it does not exist."""
    from botocore.exceptions import ClientError

    bucket, _, key = uri[5:].partition("/")
    try:
        return int(state.storage.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise ApiError(404, "source_not_found", "no such object in the bucket") from None
        raise ApiError(502, "storage_error", "the object store refused the lookup") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send a JSON object (Content-Type: application/json)")
    try:
        data = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the decoder goes
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


@needs("ingest")
async def post_job(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    body = await read_json(request)
    unknown = sorted(set(body) - {"source", "filename", "priority", "force"})
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown fields: {', '.join(map(str, unknown))[:200]}")
    uri = check_source(state, body.get("source"))
    filename = check_filename(body.get("filename") or uri.rsplit("/", 1)[-1])
    lo, hi = PRIORITY_RANGE
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not lo <= priority <= hi:
        raise ApiError(400, "invalid_priority", f"priority: an integer in [{lo}, {hi}]")
    force = parse_bool(body.get("force", False), "force")
    size = await state.run(_head, state, uri)
    if size > state.cfg.ingest.max_bytes:
        raise ApiError(413, "too_large", f"the object is larger than the {state.cfg.ingest.max_bytes}-byte limit")
    if size == 0:
        raise ApiError(400, "empty_file", "the object is empty")
    job = await state.run(state.queue.submit, uri, filename=filename, priority=priority, origin="api", force=force)
    return json_response({"job": job_json(job)}, status=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not JOB_ID_RE.fullmatch(job_id):
        raise ApiError(400, "invalid_job_id", "a job id is 1-64 letters, digits, '_' or '-'")
    return job_id


@needs("read")
async def list_jobs(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    raw_state, raw_limit = request.query.get("state"), request.query.get("limit", "100")
    try:
        wanted = JobState(raw_state) if raw_state else None
    except ValueError:
        raise ApiError(400, "invalid_state", f"state: one of {', '.join(s.value for s in JobState)}") from None
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST:
        raise ApiError(400, "invalid_limit", f"limit: an integer in [1, {MAX_LIST}]")
    jobs = await state.run(state.queue.list, state=wanted, limit=int(raw_limit))
    return json_response({"jobs": [job_json(j) for j in jobs]})


@needs("read")
async def get_job(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    job = await state.run(state.queue.get, _job_id(request))
    if job is None:
        raise ApiError(404, "job_not_found", "no such job")
    return json_response({"job": job_json(job)})


@needs("ingest")
async def cancel_job(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    try:
        job = await state.run(state.queue.cancel, _job_id(request))
    except JobNotFound:
        raise ApiError(404, "job_not_found", "no such job") from None
    return json_response({"job": job_json(job)})


def _asset_id(request: web.Request) -> str:
    asset_id = request.match_info["asset_id"]
    if not is_asset_id(asset_id):
        raise ApiError(400, "invalid_asset_id", "an asset id is 64 lowercase hex digits (the master's SHA-256)")
    return asset_id


def _asset(state: ApiState, asset_id: str) -> dict[str, Any] | None:
    descriptor = state.storage.read_descriptor(asset_id)
    tombstoned = state.queue.is_tombstoned(asset_id)
    if descriptor is None and not tombstoned:
        return None
    return {"id": asset_id, "state": "taken_down" if tombstoned else "published", "descriptor": descriptor}


@needs("read")
async def get_asset(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    asset = await state.run(_asset, state, _asset_id(request))
    if asset is None:
        raise ApiError(404, "asset_not_found", "no published or taken-down asset with this id")
    return json_response({"asset": asset})


def _take_down(state: ApiState, asset_id: str) -> tuple[bool, list[str]]:
    state.queue.take_down(asset_id)  # tombstone + event first: no submit re-publishes it from here on
    live = [j for st in JobState if st not in TERMINAL for j in state.queue.list(state=st, limit=MAX_LIST)
            if j.asset_id == asset_id]
    for job in live:  # a job still on these bytes (an ingest, a repackage) is stopped too
        state.queue.cancel(job.id)
    # descriptor first, then the media: on S3 once no origin can still be serving from what it checked before
    # (an entry is trusted REVALIDATE_S, vouched for by a descriptor check up to REVALIDATE_S older), so a
    # response it starts in that window still finds its bytes and is never cut mid-body
    return state.storage.unpublish(asset_id, grace_s=2 * REVALIDATE_S + 0.25), [j.id for j in live]


@needs("admin")
async def delete_asset(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    asset_id = _asset_id(request)
    was_published, cancelled = await state.run(_take_down, state, asset_id)
    return json_response({"asset": {"id": asset_id, "state": "taken_down", "was_published": was_published},
                          "cancelled_jobs": cancelled})


@needs("admin")
async def repackage_asset(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    asset_id = _asset_id(request)
    asset = await state.run(_asset, state, asset_id)
    if asset is None or asset["state"] != "published":
        raise ApiError(404 if asset is None else 409, "asset_not_found" if asset is None else "asset_taken_down",
                       "only a published asset can be repackaged")
    try:
        job = await state.run(state.queue.repackage, asset_id)
    except JobNotFound:  # served, but the catalog has no published row for it (another catalog published it)
        raise ApiError(409, "asset_not_in_catalog", "the asset is published but not in this catalog: run "
                       "'tonearm catalog rebuild'") from None
    return json_response({"job": job_json(job)}, status=202, headers={"Location": f"/v1/jobs/{job.id}"})


@public
async def openapi(request: web.Request) -> web.Response:
    return json_response(document(request.app[STATE].cfg))


@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


@needs("read")
async def metrics(request: web.Request) -> web.Response:
    state: ApiState = request.app[STATE]
    body = await state.run(state.metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/openapi.json", openapi, allow_head=False)
    r.add_get("/healthz", healthz, allow_head=False)
    r.add_get("/metrics", metrics, allow_head=False)
    r.add_post("/v1/jobs", post_job)
    r.add_get("/v1/jobs", list_jobs, allow_head=False)
    r.add_get("/v1/jobs/{job_id}", get_job, allow_head=False)
    r.add_delete("/v1/jobs/{job_id}", cancel_job)
    r.add_get("/v1/assets/{asset_id}", get_asset, allow_head=False)
    r.add_delete("/v1/assets/{asset_id}", delete_asset)
    r.add_post("/v1/assets/{asset_id}/repackage", repackage_asset)
