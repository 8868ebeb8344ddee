"""What every route of the management API shares: its state, the error, auth and measuring middlewares.

Separate from the public origin (``origin/``), on a port of its own: nothing here is reachable
through ``tonearm serve``.  Every route declares the scope it needs (``@needs("read")``) or that it
is public (``@public``); the auth middleware refuses a route that declares neither, so a new route
cannot be left open by mistake.  Blocking work (the catalog, the queue, storage) runs in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import HttpVersion11, web

from tonearm.app.api.errors import ApiError, error_response, scrub, to_response
from tonearm.app.api.metrics import ApiMetrics
from tonearm.app.apikeys import ApiKey, KeyStore
from tonearm.core.config import Config
from tonearm.core.errors import TonearmError

__all__ = ("ApiState", "needs", "public", "STATE", "API_KEY", "MIDDLEWARES", "job_json", "expect_guard")

log = logging.getLogger("tonearm.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY: web.AppKey[Any] = web.AppKey("tonearm_api_state", object)
STATE = KEY  # the per-app ApiState (cfg, queue, keys, storage, metrics)
API_KEY: web.RequestKey[Any] = web.RequestKey("tonearm_api_key", object)  # the verified key of a request
CHALLENGE = 'Bearer realm="tonearm api"'


def needs(scope: str) -> Callable[[Handler], Handler]:
    def mark(fn: Handler) -> Handler:
        fn.scope = scope  # type: ignore[attr-defined]
        return fn
    return mark


def public(fn: Handler) -> Handler:
    fn.scope = None  # type: ignore[attr-defined]
    return fn


class ApiState:
    """What the handlers share: built once per app."""

    def __init__(self, cfg: Config, queue: Any, keys: KeyStore, storage: Any) -> None:
        self.cfg, self.queue, self.keys, self.storage = cfg, queue, keys, storage
        self.metrics = ApiMetrics(queue)
        self.uploads: Any = None  # tonearm.app.api.uploads.Receiver, set by make_app

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)


def _route_of(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON ``{"error": {code, message}}`` with a stable code; never a traceback."""
    try:
        return await handler(request)
    except TonearmError as exc:
        return to_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "bad_request")
        message = {404: "no such route", 405: f"method {request.method} not allowed here",
                   413: "request body too large"}.get(exc.status, scrub(exc.reason or "bad request"))
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
        return error_response(exc.status, code, message, headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("api: %s %s failed", request.method, _route_of(request))
        return error_response(500, "internal_error", "internal error (logged)")


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON log line and the request metrics per request: the route template, never the raw
    path's query, and the key's id, never the key."""
    t0 = time.monotonic()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        state: ApiState = request.app[KEY]
        route = _route_of(request)
        state.metrics.observe(request.method, route, status, time.monotonic() - t0)
        key: ApiKey | None = request.get(API_KEY)
        log.info(json.dumps({"method": request.method, "route": route, "status": status,
                             "ms": round((time.monotonic() - t0) * 1000, 1), "key": key.id if key else None}))


async def authorize(request: web.Request) -> None:
    """``Authorization: Bearer <key>``: none or unknown 401 (with ``WWW-Authenticate``), a key without the
    route's scope 403.  Routes that declare nothing are refused (fail closed)."""
    route = request.match_info.route
    target = getattr(route.handler, "scope", "undeclared")
    if route.resource is None or target is None:  # unmatched (404/405 follow) or public
        return
    if target == "undeclared":
        raise ApiError(500, "internal_error", "route without a declared scope")
    state: ApiState = request.app[KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": CHALLENGE})
    key = await state.run(state.keys.verify, token.strip())
    if key is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key",
                       headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'})
    request[API_KEY] = key
    if not key.allows(target):
        raise ApiError(403, "forbidden", f"this key lacks the {target!r} scope",
                       headers={"WWW-Authenticate": f'{CHALLENGE}, error="insufficient_scope", scope="{target}"'})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if API_KEY not in request:  # an Expect: 100-continue guard may have checked it already
        await authorize(request)
    return await handler(request)


async def expect_guard(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on an upload: the key and the announced size are checked before the client
    is told to send the body, so a refused upload costs no transfer."""
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no interim responses: the handler decides
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, "expectation_failed", "only Expect: 100-continue is understood",
                              {"Connection": "close"})
    try:
        await authorize(request)
        limit = request.app[KEY].cfg.ingest.max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "too_large", f"the master is larger than the {limit}-byte limit ([ingest] max_bytes)")
    except ApiError as exc:
        exc.headers["Connection"] = "close"
        return to_response(exc)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own expect handler: the response proper has not started
    return None


MIDDLEWARES = (observe_middleware, errors_middleware, auth_middleware)  # outermost first


def job_json(job: Any) -> dict[str, Any]:
    """A job as the API shows it: a local source (a path on the server) is reduced to its origin, paths in
    the error message to ``<path>``."""
    data = job.to_json()
    if not str(data.get("source", "")).startswith("s3://"):
        data["source"] = data.get("origin") or "upload"
    if data.get("error_message"):
        data["error_message"] = scrub(data["error_message"])  # a stage's message may name server paths
    return data
