"""Signed playback URLs: an expiring HMAC-SHA256 token scoped to one asset.

The token is a path segment, ``/s/<expiry>.<signature>/assets/<id>/...``, not
a query parameter: every URI inside our manifests is relative, so players
resolve segment and init URIs against the signed playlist URL and carry the
token along without the manifests knowing about it.

``signature = base64url(HMAC-SHA256(key, "<expiry>:<asset_id>"))`` without
padding (43 characters); ``expiry`` is Unix seconds, written without leading
zeros, at most 12 digits.  A token is valid only in exactly the form ``sign``
writes (no leading zeros, no trailing bytes); expired, forged or
non-canonical tokens get 403.  Logs show ``/s/<expiry>.<redacted>/...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

from tonearm.core.backends import open_storage
from tonearm.core.config import Config, ConfigError
from tonearm.core.layouts import LAYOUTS
from tonearm.core.storage import DESCRIPTOR, is_asset_id

__all__ = ("sign", "verify", "redact", "expiry_for", "parse_ttl", "manifest_map", "playback_paths", "playback_urls")

# The one form ``sign`` writes: an expiry without leading zeros (at most 12 digits), a dot, 43 base64url
# characters.  Use with ``fullmatch``: "$" would also match before a trailing newline.
TOKEN_RE = re.compile(r"([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})")
MAX_EXPIRY = 10**12 - 1  # the largest expiry TOKEN_RE accepts (Unix seconds, in the year 33658)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h`` or ``2d``."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"--ttl {text!r}: use a positive number with an optional unit s, m, h or d (e.g. 1h)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _mac(key: str, expiry: int, asset_id: str) -> str:
    digest = hmac.new(key.encode(), f"{expiry}:{asset_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(key: str, asset_id: str, expiry: int) -> str:
    """The token for ``asset_id`` until ``expiry`` (Unix seconds); ValueError past what ``verify`` accepts."""
    if not 0 < expiry <= MAX_EXPIRY:
        raise ValueError(f"expiry {expiry} is outside 1..{MAX_EXPIRY}: no verifier would accept the token")
    return f"{expiry}.{_mac(key, expiry, asset_id)}"


def verify(key: str, token: str, asset_id: str, *, now: float | None = None) -> bool:
    """True if ``token`` is exactly what ``sign(key, asset_id, expiry)`` gives and ``expiry`` has not passed."""
    m = TOKEN_RE.fullmatch(token)
    if not m or not key:
        return False
    expiry = int(m.group(1))
    if expiry < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(token.encode(), sign(key, asset_id, expiry).encode())


def expiry_for(ttl: int, *, now: float | None = None) -> int:
    """The expiry of a token valid for ``ttl`` seconds; ConfigError when it would be past ``MAX_EXPIRY``."""
    expiry = int(time.time() if now is None else now) + ttl
    if expiry > MAX_EXPIRY:
        raise ConfigError(f"--ttl: {ttl} s from now is Unix time {expiry}, past {MAX_EXPIRY} (12 digits), the "
                          "latest expiry a signed URL can carry; use a shorter TTL (e.g. 1h, 30d)")
    return expiry


def redact(path: str) -> str:
    """A path for logs: ``/s/<expiry>.<signature>/...`` becomes ``/s/<expiry>.<redacted>/...``.

    A signature is a bearer credential for its asset until it expires: whoever reads the log could play it.
    """
    if not path.startswith("/s/"):
        return path
    token, sep, rest = path[3:].partition("/")
    expiry, dot, _ = token.partition(".")
    shown = f"{expiry}.<redacted>" if dot and expiry.isdigit() and len(expiry) <= 12 else "<redacted>"
    return f"/s/{shown}{sep}{rest}"


# Keys of the descriptor's "manifests" map (written by the manifests stage) -> (layout, protocol).
DESCRIPTOR_KEYS = {key: (lay.name, key.split("_", 1)[0]) for lay in LAYOUTS.values() for key in lay.manifest_keys()}


def _standard(layout: str) -> dict[str, str]:
    """``{"hls": rel, "dash": rel}`` of a layout, from the layout table."""
    lay = LAYOUTS[layout]
    return {"hls": lay.hls_master, "dash": lay.dash_manifest}


def manifest_map(descriptor: dict[str, Any] | None, layouts: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``{layout: {"hls": rel, "dash": rel}}``: the descriptor's own list, else the standard names."""
    listed = (descriptor or {}).get("manifests")
    out: dict[str, dict[str, str]] = {}
    if isinstance(listed, dict):
        for key, rel in listed.items():
            where = DESCRIPTOR_KEYS.get(key)
            if where and isinstance(rel, str) and not rel.startswith("/") and ".." not in rel:
                out.setdefault(where[0], {})[where[1]] = rel
    return out or {layout: _standard(layout) for layout in layouts if layout in LAYOUTS}


def playback_paths(asset_id: str, manifests: dict[str, dict[str, str]], token: str | None = None
                   ) -> dict[str, dict[str, str]]:
    """Origin paths of an asset's manifests, through a signed prefix when ``token`` is given."""
    prefix = f"/s/{token}" if token else ""
    return {layout: {proto: f"{prefix}/assets/{asset_id}/{rel}" for proto, rel in protos.items()}
            for layout, protos in manifests.items()}


def playback_urls(cfg: Config, asset_id: str, ttl: int, base: str | None = None) -> list[str]:
    """Signed HLS and DASH URLs (every published layout) valid for ``ttl`` seconds, and for a cbcs or
    cenc asset the ClearKey licence URL under the same token."""
    if not is_asset_id(asset_id):
        raise ConfigError(f"{asset_id!r} is not an asset id (64 lowercase hex characters)")
    if not cfg.origin.signing_key:
        raise ConfigError("signing needs a key: set [origin] signing_key or TONEARM_SIGNING_KEY")
    if base is None:
        host = cfg.origin.host
        base = f"http://{'[' + host + ']' if ':' in host else host}:{cfg.origin.port}"
    token = sign(cfg.origin.signing_key, asset_id, expiry_for(ttl))
    descriptor = _descriptor(cfg, asset_id)
    paths = playback_paths(asset_id, manifest_map(descriptor, cfg.ladder.layouts), token)
    urls = [base.rstrip("/") + p for layout in paths.values() for p in layout.values()]
    protection = (descriptor or {}).get("protection")
    if isinstance(protection, dict) and protection.get("scheme") in ("cbcs", "cenc"):
        # the ClearKey licence URL the player is given (origin.licence); aes-128 key URIs are in the playlists
        urls.append(f"{base.rstrip('/')}/s/{token}/keys/{asset_id}/clearkey")
    return urls


def _descriptor(cfg: Config, asset_id: str) -> dict[str, Any] | None:
    """The published descriptor if this machine can read it (it lists the manifests), else None."""
    try:
        if cfg.storage.backend == "local":
            path = cfg.storage.root / "published" / asset_id / DESCRIPTOR
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        return open_storage(cfg).read_descriptor(asset_id)
    except Exception:  # unreadable from here: the standard manifest names still work
        return None
