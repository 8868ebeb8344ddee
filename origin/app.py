"""The origin application: one catch-all route, dispatched by path prefix.

aiohttp's router, middlewares and ``FileResponse`` each cost more per request
than serving a cached segment does, so there is a single route whose handler
picks the branch with a few string tests, measures and logs the request
itself, and sends cached bytes with precomputed headers (see
``origin.sources`` for the cache and ``origin.respond`` for the statuses).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from aiohttp import web

from origin.api import CatalogAPI
from origin.cache import EntryCache
from origin.licence import KEYS_RE, NO_STORE, KeyService
from origin.observe import CONTENT_TYPE_LATEST, METRICS, AccessLog, render_metrics
from origin.representation import Kind, classify
from origin.respond import Aborted, CachedResponse, Planned, respond, text_plan
from origin.s3source import S3Source
from origin.signing import redact, verify
from origin.sources import MAX_CACHED_FILE, LocalSource, Scope, Source
from tonearm.core.backends import open_storage
from tonearm.core.config import Config
from tonearm.core.s3storage import S3Storage, make_client

__all__ = ("make_app", "ORIGIN")

log = logging.getLogger("tonearm.origin")

STATIC_ROOT = Path(__file__).parent / "static"
MAX_PATH = 1024  # longer request paths are hostile or broken: 414-ish, answered 400

# A published file: <asset id>/<file> or <asset id>/<dir>/<file>; names start with a letter, digit, _ or -.
_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}"
ASSET_RE = re.compile(rf"/assets/([0-9a-f]{{64}})/((?:{_NAME}/)?{_NAME})")
SIGNED_RE = re.compile(r"/s/([^/]{1,200})(/assets/.*)")
SIGNED_KEYS_RE = re.compile(r"/s/([^/]{1,200})(/keys/.*)")  # key delivery: origin.licence
STATIC_RE = re.compile(rf"/static/((?:{_NAME}/){{0,3}}{_NAME})")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

EXPOSE = "Content-Range, Content-Length, Content-Encoding, ETag, Last-Modified, Accept-Ranges, X-Request-Id"
ALLOW_HEADERS = "Range, If-None-Match, If-Modified-Since, If-Range, If-Match, If-Unmodified-Since, X-Request-Id"
API_EXPOSE = "X-Request-Id"
API_ALLOW_HEADERS = "Authorization, X-Request-Id"
KEYS_ALLOW_HEADERS = "Content-Type, X-Request-Id"  # EME licence requests are POSTed JSON
ROUTE_OF_KIND = {Kind.MEDIA: "media", Kind.INIT: "init", Kind.PLAYLIST: "manifest", Kind.MPD: "manifest",
                 Kind.DESCRIPTOR: "descriptor", Kind.STATIC: "static"}

class Refusal(NamedTuple):
    status: int
    text: str


NOT_FOUND = Refusal(404, "not found\n")
SIGNATURE_REQUIRED = Refusal(403, "a signed URL is required\n")
BAD_SIGNATURE = Refusal(403, "expired or invalid signature\n")

PLACEHOLDER = b"""<!doctype html><meta charset="utf-8"><title>tonearm origin</title>
<h1>tonearm origin</h1><p>The player page is not installed. Assets: <a href="/api/assets">/api/assets</a>.</p>
"""


class Origin:
    """Per-process state of the server: config, storage source, cache, log."""

    def __init__(self, cfg: Config, source: Source | None = None) -> None:
        self.cfg = cfg
        ocfg = cfg.origin
        self.cache = EntryCache(max(1, ocfg.cache_mb * 1024 * 1024))
        self.local = LocalSource(cfg.storage.root / "published", STATIC_ROOT, self.cache, ocfg.manifest_ttl)
        # A file is held whole only if many fit in the budget; cache_mb = 0 streams every body from disk.
        self.local.max_cached_file = min(MAX_CACHED_FILE, max(0, ocfg.cache_mb) * 1024 * 1024 // 16)
        if source is None:
            storage = open_storage(cfg, create=False)  # the one place choosing the backend; the origin adapts
            if isinstance(storage, S3Storage):
                storage.client.close()  # the origin's reads get a client with its own short timeouts
                client = make_client(cfg.storage, timeout=(ocfg.s3_timeout, ocfg.s3_timeout),
                                     attempts=ocfg.s3_attempts)
                source = S3Source(cfg.storage, self.cache, ocfg.manifest_ttl, self.local, client=client)
        self.source: Source = source or self.local
        self.access = AccessLog(ocfg.access_log)
        self.key = ocfg.signing_key
        self.require_signed = ocfg.require_signed
        self.cors_any = "*" in ocfg.cors_origins
        self.cors_origins = frozenset(ocfg.cors_origins)
        self.cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSE} \
            if self.cors_any else {}
        # The API has CORS of its own (none by default: the demo page is same-origin), apart from media's.
        self.api_cors_origins = frozenset(ocfg.api_cors_origins)
        self.allow_private_network = ocfg.allow_private_network
        # Connections that have not started a request yet -> their header_timeout timer (filled by
        # origin.server.Acceptor; a request that reaches the handler disarms its connection's timer).
        self.first_request_timers: dict[Any, asyncio.TimerHandle] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()):x}-"
        # Set at SIGTERM (origin.server): /readyz answers 503 from then on, so a load balancer stops sending
        # new requests while the ones in flight finish.
        self.draining = False
        self.ready_timeout = ocfg.s3_timeout + 0.5
        self.api = CatalogAPI(cfg)
        self.keys = KeyService(cfg)

    # -- the one handler -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        if self.first_request_timers:
            timer = self.first_request_timers.pop(request.protocol, None)
            if timer is not None:
                timer.cancel()
        extra, rid = self.response_fields(request.headers, api=request.path.startswith("/api/"))
        METRICS.active += 1
        route, status, error = "other", 500, None
        resp: web.StreamResponse | None = None
        try:
            route, resp = await self._dispatch(request, extra)
            if not resp.prepared:
                await resp.prepare(request)
                await resp.write_eof()
            status = resp.status
            return resp
        except Aborted as exc:
            route, resp, cause = exc.route, exc.response, exc.__cause__
            if request.transport is not None:
                request.transport.close()  # headers are out: a cut connection is the only honest signal
            if isinstance(cause, ConnectionError):  # the client went away mid-body: not our error
                status, error = 499, type(cause).__name__
                METRICS.disconnects.labels(route).inc()
            else:
                status, error = resp.status, f"aborted mid-body: {type(cause).__name__}: {cause}"
                log.error("%s %s: %s", request.method, redact(request.path), error, exc_info=cause)
            return resp
        except ConnectionError as exc:  # gone before a response started
            status, error = 499, type(exc).__name__
            METRICS.disconnects.labels(route).inc()
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=499)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("request %s %s failed", request.method, redact(request.path))
            resp = _text(500, "internal error\n", extra)
            await resp.prepare(request)
            await resp.write_eof()
            status = resp.status
            return resp
        finally:
            METRICS.active -= 1
            elapsed = time.perf_counter() - t0
            nbytes = (resp.content_length or 0) if resp is not None and request.method != "HEAD" and status < 499 \
                else 0
            METRICS.observe(route, status, nbytes, elapsed)
            if self.access.enabled:
                try:
                    self.access.write(request, rid, status, nbytes, elapsed, route, error)
                except Exception:  # a log line is never worth a request
                    log.exception("access log write failed")

    def response_fields(self, headers: Mapping[str, str], *, api: bool = False) -> tuple[dict[str, str], str]:
        """The fields every response gets (CORS, X-Request-Id) and the request id: the aiohttp handler's and
        the fast path's (``origin.fastpath``).  The id is the client's when it is a sane token, else one
        unique to this process."""
        extra = self._api_cors(headers) if api else self._cors(headers)
        rid = headers.get("X-Request-Id")
        if rid is None or not REQUEST_ID_RE.fullmatch(rid):
            rid = self._id_prefix + format(next(self._ids), "x")
        extra["X-Request-Id"] = rid
        return extra, rid

    def _cors(self, headers: Mapping[str, str]) -> dict[str, str]:
        """CORS fields of a media or manifest response (a fresh dict: the caller adds to it)."""
        if self.cors_any:
            return dict(self.cors)
        origin = headers.get("Origin")
        if origin in self.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSE, "Vary": "Origin"}
        return {}

    def _api_cors(self, headers: Mapping[str, str]) -> dict[str, str]:
        allowed = self.api_cors_origins
        if not allowed:
            return {}
        if "*" in allowed:
            return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": API_EXPOSE}
        origin = headers.get("Origin")
        if origin in allowed:
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": API_EXPOSE,
                    "Vary": "Origin"}
        return {"Vary": "Origin"}

    async def _dispatch(self, request: web.Request, extra: dict[str, str]) -> tuple[str, web.StreamResponse]:
        path = request.path
        if len(request.raw_path) > MAX_PATH or "\x00" in path or "\\" in path:
            return "other", _text(400, "bad request path\n", extra)
        method = request.method
        if method == "OPTIONS":
            return "preflight", self._preflight(request, extra)
        if path.startswith("/keys/"):  # keys only ever through a token for their asset
            return "keys", _text(403, "a signed URL is required\n", {**extra, "Cache-Control": NO_STORE})
        if path.startswith("/s/") and (km := SIGNED_KEYS_RE.fullmatch(path)) is not None:
            target = KEYS_RE.fullmatch(km.group(2))
            if target is None:
                return "keys", _text(404, "not found\n", {**extra, "Cache-Control": NO_STORE})
            if not verify(self.key, km.group(1), target.group(1)):
                return "keys", _text(403, "expired or invalid signature\n", {**extra, "Cache-Control": NO_STORE})
            return "keys", await self.keys.handle(request, target.group(1), target.group(2), extra)
        if method not in ("GET", "HEAD"):
            return "other", _text(405, "method not allowed\n", {**extra, "Allow": "GET, HEAD, OPTIONS"})
        if path.startswith(("/assets/", "/s/")):
            located = self.locate(path)
            if isinstance(located, Refusal):
                return "other", _text(located.status, located.text, extra)
            return await self._asset(request, *located, extra)
        if path == "/":
            return await self._static(request, "index.html", extra, placeholder=True)
        if path.startswith("/static/"):
            m = STATIC_RE.fullmatch(path)
            if m is None:
                return "other", _text(404, "not found\n", extra)
            return await self._static(request, m.group(1), extra)
        if path.startswith("/api/"):
            return "api", await self.api.handle(request, extra)
        if path == "/healthz":
            return "health", _text(200, "ok\n", {**extra, "Cache-Control": "no-store"})
        if path == "/readyz":
            return "health", await self._readyz(extra)
        if path == "/metrics":
            METRICS.flush()
            body = await asyncio.get_running_loop().run_in_executor(None, render_metrics)
            return "metrics", web.Response(body=body, headers={**extra, "Content-Type": CONTENT_TYPE_LATEST,
                                                                "Cache-Control": "no-store"})
        return "other", _text(404, "not found\n", extra)

    def locate(self, path: str) -> tuple[Scope, str, Kind] | Refusal:
        """(scope, file, kind) of an ``/assets/...`` or signed ``/s/<token>/assets/...`` path, or why not.

        The one place media paths and their signatures are checked: the aiohttp
        handler and the fast path (``origin.fastpath``) both ask here.
        """
        if path.startswith("/assets/"):
            m = ASSET_RE.fullmatch(path)
            if m is None:
                return NOT_FOUND
            if self.require_signed:
                return SIGNATURE_REQUIRED
        else:
            signed = SIGNED_RE.fullmatch(path)
            m = ASSET_RE.fullmatch(signed.group(2)) if signed else None
            if signed is None or m is None:
                return NOT_FOUND
            if not verify(self.key, signed.group(1), m.group(1)):
                return BAD_SIGNATURE
        asset_id, rel = m.group(1), m.group(2)
        kind = classify(rel)
        if kind is None:
            return NOT_FOUND
        return Scope(f"a/{asset_id}", asset_id), rel, kind

    def storage_failed(self, method: str, path: str, exc: Exception, extra: dict[str, str]) -> Planned:
        """Storage unreachable or failing: say so (502, retry soon), the request was fine; logged once here."""
        log.error("%s %s: storage error: %s: %s", method, redact(path), type(exc).__name__, exc)
        return text_plan(502, "storage error\n", {**extra, "Retry-After": "1"})

    async def _readyz(self, extra: dict[str, str]) -> web.Response:
        """200 when this origin should get traffic: not draining, and its storage answers (in bounded time)."""
        headers = {**extra, "Cache-Control": "no-store"}
        if self.draining:
            return _text(503, "draining\n", headers)
        try:
            ok = await asyncio.wait_for(self.source.ready(), self.ready_timeout)
        except asyncio.TimeoutError:
            ok = False
        return _text(200 if ok else 503, "ready\n" if ok else "storage unreachable\n", headers)

    async def _asset(self, request: web.Request, scope: Scope, rel: str, kind: Kind, extra: dict[str, str]
                     ) -> tuple[str, web.StreamResponse]:
        route = ROUTE_OF_KIND[kind]
        try:
            found = await self.source.resolve(scope, rel, kind)
        except Exception as exc:
            return route, CachedResponse(self.storage_failed(request.method, request.path, exc, extra))
        if found is None:
            return route, CachedResponse(text_plan(404, "not found\n", extra))
        try:
            return route, await respond(request, found[0], found[1], extra)
        except Aborted as exc:
            exc.route = route
            raise

    async def _static(self, request: web.Request, rel: str, extra: dict[str, str], *, placeholder: bool = False
                      ) -> tuple[str, web.StreamResponse]:
        found = await self.local.resolve(Scope("static", None), rel, Kind.STATIC)
        if found is None:
            if placeholder:
                return "static", web.Response(body=PLACEHOLDER, headers={
                    **extra, "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"})
            return "static", _text(404, "not found\n", extra)
        return "static", await respond(request, found[0], found[1], extra)

    def _preflight(self, request: web.Request, extra: dict[str, str]) -> web.Response:
        """CORS preflight (Fetch standard, CORS protocol) plus Private Network Access."""
        headers = dict(extra)
        headers.pop("Access-Control-Expose-Headers", None)
        if "Access-Control-Allow-Origin" in headers:
            keys = request.path.startswith("/keys/") or SIGNED_KEYS_RE.fullmatch(request.path) is not None
            headers.update({
                "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS" if keys else "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": API_ALLOW_HEADERS if request.path.startswith("/api/")
                else KEYS_ALLOW_HEADERS if keys else ALLOW_HEADERS,
                "Access-Control-Max-Age": "86400",
            })
            # Chromium's Private Network Access preflight: a public page may fetch from this (private) origin,
            # which only an origin configured for it allows ([origin] allow_private_network).
            if self.allow_private_network and \
                    request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
                headers["Access-Control-Allow-Private-Network"] = "true"
        return web.Response(status=204, headers=headers)

    async def close(self) -> None:
        try:
            self.access.close()  # never raises; belt and braces: the source must be closed whatever happens
        finally:
            await self.source.close()


def _text(status: int, text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)


ORIGIN = web.AppKey("origin", Origin)


def make_app(cfg: Config, *, source: Source | None = None) -> web.Application:
    """The origin as an aiohttp application (``tonearm serve`` runs it; tests mount it directly)."""
    app = web.Application()
    origin = Origin(cfg, source)
    app[ORIGIN] = origin
    app.router.add_route("*", "/{tail:.*}", origin.handle)

    async def flusher(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(0.5)
                METRICS.flush()
                origin.access.flush()

        task = asyncio.create_task(loop())
        gates = asyncio.create_task(origin.source.keep_gates_fresh())
        yield
        task.cancel()
        gates.cancel()
        METRICS.flush()
        await origin.close()

    app.cleanup_ctx.append(flusher)
    return app

