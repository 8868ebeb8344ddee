"""Key delivery for protected assets: the W3C ClearKey licence and the HLS AES-128 key.

Both live at ``/s/<token>/keys/<asset id>/...`` and answer only to a valid signed token for that
asset (origin.signing, the same HMAC tokens as the media): unsigned ``/keys/...``, a forged or
expired token, or a token for another asset get 403, as does everything when no signing key is
configured.  Answers are ``Cache-Control: no-store, private`` (an edge never keeps a key).

- ``POST .../keys/<id>/clearkey``: the EME ClearKey licence exchange (W3C Encrypted Media
  Extensions 9.1.3 / 9.1.4): the request ``{"kids": [base64url KID, ...], "type": "temporary"}``
  (at most 4 KiB, at most 16 KIDs), the answer ``{"keys": [{"kty": "oct", "kid": ..., "k": ...}],
  "type": "temporary"}``, base64url without padding.  Only the asset's own KID is answered; a
  request naming none of it gets 403.
- ``GET .../keys/<id>/hls.key``: the 16 key bytes (RFC 8216 4.3.2.4, METHOD=AES-128).

Key records are read from the key store (tonearm.core.keys) in a thread: never on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from typing import Any

from aiohttp import web

from tonearm.core.config import Config
from tonearm.core.keys import ContentKey, KeyStoreError, open_keystore

__all__ = ("KeyService", "KEYS_RE", "NO_STORE")

log = logging.getLogger("tonearm.origin.licence")

KEYS_RE = re.compile(r"/keys/([0-9a-f]{64})/(clearkey|hls\.key)")
NO_STORE = "no-store, private"
MAX_REQUEST = 4096
MAX_KIDS = 16
_B64URL = re.compile(r"[A-Za-z0-9_-]{22}={0,2}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kid(text: Any) -> bytes | None:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "==")
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 16 else None


class KeyService:
    """The origin's view of the key store (read-only: it never creates a master key)."""

    def __init__(self, cfg: Config) -> None:
        self.store = open_keystore(cfg.data_dir, cfg.protection.master_key_file, create=False)

    async def _key(self, asset_id: str) -> ContentKey | None:
        return await asyncio.get_running_loop().run_in_executor(None, self.store.get, asset_id)

    async def handle(self, request: web.Request, asset_id: str, name: str, extra: dict[str, str]) -> web.Response:
        headers = {**extra, "Cache-Control": NO_STORE}
        try:
            key = await self._key(asset_id)
        except KeyStoreError as exc:  # a broken record or master key: ours to fix, not the player's
            log.error("key store: %s", exc)
            return _text(500, "key store unavailable\n", headers)
        if key is None:
            return _text(404, "no key for this asset\n", headers)
        if name == "hls.key":
            if request.method not in ("GET", "HEAD"):
                return _text(405, "method not allowed\n", {**headers, "Allow": "GET, HEAD, OPTIONS"})
            return web.Response(body=key.key, headers={**headers, "Content-Type": "application/octet-stream"})
        if request.method != "POST":
            return _text(405, "method not allowed\n", {**headers, "Allow": "POST, OPTIONS"})
        if request.content_length is not None and request.content_length > MAX_REQUEST:
            return _text(413, "licence request too large\n", headers)
        body = b""
        while len(body) <= MAX_REQUEST:  # read() may return a part: read to the end, never past the cap
            chunk = await request.content.read(MAX_REQUEST + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_REQUEST:
            return _text(413, "licence request too large\n", headers)
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _text(400, "licence request is not JSON\n", headers)
        kids = req.get("kids") if isinstance(req, dict) else None
        if not isinstance(kids, list) or not 1 <= len(kids) <= MAX_KIDS:
            return _text(400, f"licence request needs 'kids': 1 to {MAX_KIDS} key ids\n", headers)
        parsed = [_kid(k) for k in kids]
        if any(k is None for k in parsed):
            return _text(400, "licence request: each kid is 16 bytes in base64url\n", headers)
        if key.kid not in parsed:
            return _text(403, "no requested key belongs to this asset\n", headers)
        kind = req.get("type", "temporary")
        if kind not in ("temporary", "persistent-license"):
            return _text(400, "licence request: type is 'temporary' or 'persistent-license'\n", headers)
        answer = {"keys": [{"kty": "oct", "kid": b64url(key.kid), "k": b64url(key.key)}], "type": kind}
        return web.Response(body=json.dumps(answer).encode(), headers={**headers, "Content-Type": "application/json"})


def _text(status: int, text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)
