"""The JSON API: ``/api/assets`` (paginated catalog) and ``/api/assets/<id>`` (one asset).

``/api/assets?q=<text>&limit=&offset=`` searches: assets whose title or artist contains the text,
case-insensitively (``MAX_QUERY`` characters at most, no control characters; ``%`` and ``_`` are
literal), in the same order and pages as the list, ``total`` counting the matches.  It searches
the tags only, never the master's file name, in every mode.

``[origin] catalog`` decides who may read it and what it says:

``"public"`` (default)
    Anyone; published assets only, a fixed set of fields (no master file
    name, no error record, nothing of the machine), and never a token:
    playback paths are unsigned, and with ``require_signed`` the items carry
    none at all (``"signing_required": true``).  Signed URLs then come from
    ``tonearm sign`` or from a service holding the catalog key.
``"key"``
    Only with ``Authorization: Bearer <catalog_key>`` (401 otherwise); the
    whole catalog (``?state=`` any state or ``all``, master names, error
    records) with playback paths signed for ``SIGNED_TTL`` seconds.
``"off"``
    Every ``/api/`` path answers 404.

The catalog is SQLite beside local storage; on S3 it is read from the published descriptors
(``origin.catalog_view``), so an origin keeps no local state.  Both block, so every query runs in
the executor.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import unicodedata
from typing import Any

from aiohttp import web

from origin.catalog_view import DescriptorCatalog
from origin.signing import manifest_map, playback_paths, sign
from tonearm.core.catalog_open import open_catalog
from tonearm.core.config import Config
from tonearm.core.model import AssetState
from tonearm.core.storage import is_asset_id

__all__ = ("CatalogAPI", "handle")

MAX_LIMIT = 500
MAX_QUERY = 100  # characters of a search; a longer ?q= is 400
SIGNED_TTL = 3600
AUTH_CHALLENGE = 'Bearer realm="tonearm catalog"'


def _json(status: int, data: Any, extra: dict[str, str], *, private: bool = False) -> web.Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {**extra, "Content-Type": "application/json; charset=utf-8",
               "Cache-Control": "private, no-store" if private else "no-cache"}
    if private:
        headers["Vary"] = f"{extra['Vary']}, Authorization" if "Vary" in extra else "Authorization"
    return web.Response(status=status, body=body, headers=headers)


class CatalogAPI:
    """What the API needs of the origin: the catalog settings, the signing key, the catalog (opened lazily)."""

    def __init__(self, cfg: Config) -> None:
        ocfg = cfg.origin
        self.cfg = cfg
        self.key = ocfg.signing_key
        self.require_signed = ocfg.require_signed
        self.catalog_mode = ocfg.catalog
        self.catalog_key = ocfg.catalog_key
        self.catalog: Any = None  # opened on first use, in the executor (sqlite is blocking)

    async def handle(self, request: web.Request, extra: dict[str, str]) -> web.Response:
        return await handle(self, request, extra)


def _catalog(origin: "CatalogAPI") -> Any:
    """The catalog file beside local storage; on object storage the published descriptors (no local state)."""
    if origin.catalog is None:
        if origin.cfg.catalog.is_postgres:  # the shared catalog: every origin sees the same rows
            origin.catalog = open_catalog(origin.cfg)
        elif origin.cfg.storage.backend == "s3":  # no local state: the published descriptors in the bucket
            from tonearm.core.backends import open_storage

            origin.catalog = DescriptorCatalog(open_storage(origin.cfg, create=False))
        else:
            origin.catalog = open_catalog(origin.cfg)  # the SQLite file beside local storage
    return origin.catalog


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(value)
    return max(lo, min(hi, int(value)))


def _search(value: str | None) -> str | None:
    """``?q=``: the text to search for (None: no search), or ValueError for one the API refuses."""
    text = (value or "").strip()
    if len(text) > MAX_QUERY:
        raise ValueError(f"q is longer than {MAX_QUERY} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("q holds a control character")
    return text or None


def authorized(key: str, header: str | None) -> bool:
    """``Authorization: Bearer <key>`` (RFC 6750; the scheme is case-insensitive), compared in constant time."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    given = credentials.strip().encode("utf-8", "surrogateescape")
    same = hmac.compare_digest(given, key.encode("utf-8", "surrogateescape"))  # always compared: no early exit
    return bool(key) and scheme.lower() == "bearer" and same


def _playback(origin: "CatalogAPI", rec: Any, trusted: bool) -> dict[str, Any]:
    """Playback paths: signed only for a trusted (key-holding) caller; none when unsigned ones would be 403."""
    require = origin.require_signed
    if trusted and origin.key:
        token = sign(origin.key, rec.id, int(time.time()) + SIGNED_TTL)
    elif require:
        return {"signing_required": True}
    else:
        token = None
    paths = playback_paths(rec.id, manifest_map(rec.info or {}, origin.cfg.ladder.layouts), token)
    return {"playback": paths, "signing_required": require}


def _summary(origin: "CatalogAPI", rec: Any, trusted: bool) -> dict[str, Any]:
    """The fields of a catalog page; a fixed list, so nothing else of the record (paths, stderr) leaks out."""
    info = rec.info or {}
    tags = info.get("tags") or {}
    out: dict[str, Any] = {
        "id": rec.id,
        "state": rec.state.value,
        "title": tags.get("title"),
        "artist": tags.get("artist"),
        "duration_s": info.get("duration_s"),
        "loudness": info.get("loudness"),
        "renditions": info.get("renditions"),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
    }
    if trusted:
        out["source_name"] = rec.source_name
    if rec.state is AssetState.PUBLISHED:
        out.update(_playback(origin, rec, trusted))
    return out


def _detail(origin: "CatalogAPI", rec: Any, trusted: bool) -> dict[str, Any]:
    info = rec.info or {}
    out = _summary(origin, rec, trusted)
    out.update({
        "manifests": info.get("manifests"),
        "sample_rate": info.get("sample_rate"),
        "channels": info.get("channels"),
        "codec": info.get("codec"),
        "tags": info.get("tags"),
    })
    if trusted:
        out["error"] = rec.error
    return out


async def handle(origin: "CatalogAPI", request: web.Request, extra: dict[str, str]) -> web.Response:
    mode = origin.catalog_mode
    if mode == "off":
        return _json(404, {"error": "not found"}, extra)
    trusted = mode == "key"
    if trusted and not authorized(origin.catalog_key, request.headers.get("Authorization")):
        return _json(401, {"error": "the catalog needs Authorization: Bearer <catalog key>"},
                     {**extra, "WWW-Authenticate": AUTH_CHALLENGE}, private=True)
    path = request.path.rstrip("/")
    loop = asyncio.get_running_loop()
    if path == "/api/assets":
        q = request.query
        raw_state = q.get("state", AssetState.PUBLISHED.value)
        try:
            limit = _int(q.get("limit"), 50, 1, MAX_LIMIT)
            offset = _int(q.get("offset"), 0, 0, 10**9)
            search = _search(q.get("q"))
            if not trusted and raw_state != AssetState.PUBLISHED.value:
                return _json(400, {"error": "the public catalog lists published assets only"}, extra)
            state = None if raw_state == "all" else AssetState(raw_state)
        except ValueError as exc:
            return _json(400, {"error": f"bad query parameter: {exc}",
                               "states": ["all", *(s.value for s in AssetState)]}, extra, private=trusted)

        def query() -> tuple[list[Any], int]:
            cat = _catalog(origin)
            return (cat.list(limit=limit, offset=offset, state=state, q=search),
                    cat.count(state=state, q=search))

        records, total = await loop.run_in_executor(None, query)
        return _json(200, {"items": [_summary(origin, r, trusted) for r in records], "limit": limit,
                           "offset": offset, "total": total, "state": raw_state, "q": search or ""}, extra,
                     private=trusted)
    asset_id = path.removeprefix("/api/assets/")
    if path.startswith("/api/assets/") and is_asset_id(asset_id):
        rec = await loop.run_in_executor(None, lambda: _catalog(origin).get(asset_id))
        if rec is None or (not trusted and rec.state is not AssetState.PUBLISHED):
            return _json(404, {"error": "no such asset"}, extra, private=trusted)
        return _json(200, _detail(origin, rec, trusted), extra, private=trusted)
    return _json(404, {"error": "not found"}, extra, private=trusted)
