"""Errors of the management API: each a ``TonearmError`` with a stable code and its HTTP status.

Every error leaves the API as ``{"error": {"code": ..., "message": ...}}``; a message never holds a
machine path, a key or a stack trace.  Errors raised below the API (``Tombstoned``, ``JobNotFound``,
``Rejected`` ...) are mapped by code in :data:`STATUS_OF_CODE`; anything else is ``internal_error`` (500).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from tonearm.core.errors import TonearmError

__all__ = ("ApiError", "error_response", "STATUS_OF_CODE")

# Codes raised by other layers, and the status each one means here.
STATUS_OF_CODE = {
    "asset_taken_down": 409,  # tonearm.app.jobs.Tombstoned: re-ingest needs force
    "job_not_found": 404,
    "key_not_found": 404,
    "too_large": 413,
    "empty_file": 400,
    "config_invalid": 400,
}


class ApiError(TonearmError):
    """An API answer other than success: ``ApiError(404, "asset_not_found", "no such asset")``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode()
    return web.Response(status=status, body=body, headers={**(headers or {}), "Cache-Control": "no-store",
                                                           "Content-Type": "application/json; charset=utf-8"})


_PATH_RE = re.compile(r"(?:(?<=[\s'\"(=])|^)/[^\s'\"),;]+")


def scrub(message: str) -> str:
    """A message of another layer without machine paths (``/srv/data/masters/...`` -> ``<path>``), cut short."""
    return _PATH_RE.sub("<path>", message)[:500]


def to_response(exc: TonearmError) -> web.Response:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc), exc.headers)
    status = STATUS_OF_CODE.get(exc.code, 500 if exc.code == "internal_error" else 422)
    return error_response(status, exc.code, scrub(str(exc)))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={**(headers or {}), "Cache-Control": "no-store",
                                                           "Content-Type": "application/json; charset=utf-8"})
