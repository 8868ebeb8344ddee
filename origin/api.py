"""The JSON API: ``/api/assets`` (paginated catalog) and ``/api/assets/<id>`` (one asset).

The catalog is SQLite (blocking), so every query runs in the executor.
Listing shows published assets unless ``?state=`` asks for another state
(``?state=all`` for every state).  Playback URLs are paths on this origin,
signed when a signing key is configured.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from origin.signing import manifest_map, playback_paths, sign
from tonearm.model import AssetState
from tonearm.storage import is_asset_id

if TYPE_CHECKING:
    from origin.app import Origin

__all__ = ("handle",)

MAX_LIMIT = 500
SIGNED_TTL = 3600


def _json(status: int, data: Any, extra: dict[str, str]) -> web.Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={
        **extra, "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-cache"})


def _catalog(origin: "Origin") -> Any:
    if origin.catalog is None:
        from tonearm.catalog import Catalog

        origin.catalog = Catalog(origin.cfg.catalog_path)
    return origin.catalog


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(value)
    return max(lo, min(hi, int(value)))


def _summary(origin: "Origin", rec: Any) -> dict[str, Any]:
    info = rec.info or {}
    tags = info.get("tags") or {}
    out: dict[str, Any] = {
        "id": rec.id,
        "state": rec.state.value,
        "source_name": rec.source_name,
        "title": tags.get("title"),
        "artist": tags.get("artist"),
        "duration_s": info.get("duration_s"),
        "loudness": info.get("loudness"),
        "renditions": info.get("renditions"),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
    }
    if rec.state is AssetState.PUBLISHED:
        token = sign(origin.key, rec.id, int(time.time()) + SIGNED_TTL) if origin.key else None
        out["playback"] = playback_paths(rec.id, manifest_map(info, origin.cfg.ladder.layouts), token)
    return out


def _detail(origin: "Origin", rec: Any) -> dict[str, Any]:
    info = rec.info or {}
    out = _summary(origin, rec)
    out.update({
        "manifests": info.get("manifests"),
        "sample_rate": info.get("sample_rate"),
        "channels": info.get("channels"),
        "codec": info.get("codec"),
        "tags": info.get("tags"),
        "error": rec.error,
    })
    return out


async def handle(origin: "Origin", request: web.Request, extra: dict[str, str]) -> web.Response:
    path = request.path.rstrip("/")
    loop = asyncio.get_running_loop()
    if path == "/api/assets":
        q = request.query
        try:
            limit = _int(q.get("limit"), 50, 1, MAX_LIMIT)
            offset = _int(q.get("offset"), 0, 0, 10**9)
            raw_state = q.get("state", AssetState.PUBLISHED.value)
            state = None if raw_state == "all" else AssetState(raw_state)
        except ValueError as exc:
            return _json(400, {"error": f"bad query parameter: {exc}",
                               "states": ["all", *(s.value for s in AssetState)]}, extra)

        def query() -> tuple[list[Any], int]:
            cat = _catalog(origin)
            return cat.list(limit=limit, offset=offset, state=state), cat.count(state=state)

        records, total = await loop.run_in_executor(None, query)
        return _json(200, {"items": [_summary(origin, r) for r in records], "limit": limit, "offset": offset,
                           "total": total, "state": raw_state}, extra)
    asset_id = path.removeprefix("/api/assets/")
    if path.startswith("/api/assets/") and is_asset_id(asset_id):
        rec = await loop.run_in_executor(None, lambda: _catalog(origin).get(asset_id))
        if rec is None:
            return _json(404, {"error": "no such asset"}, extra)
        return _json(200, _detail(origin, rec), extra)
    return _json(404, {"error": "not found"}, extra)
