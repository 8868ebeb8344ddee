"""Content types of every file tonearm publishes or serves, by name: the one table.

The origin's headers and the object store's ``Content-Type`` metadata both read
it.  Segments are ``audio/mp4`` (every rendition is audio-only CMAF: the codec
table's ``mime``), not ``video/iso.segment``: Apple's authoring spec and the
DASH-IF guidelines use it for audio, and MSE players ignore the HTTP type.
"""

from __future__ import annotations

from tonearm.core.codecs import CODECS

__all__ = ("PUBLISHED_TYPES", "STATIC_TYPES", "COMPRESSIBLE", "type_of")

_SEGMENTS = {c.mime for c in CODECS.values()}
assert len(_SEGMENTS) == 1, "one MIME type for every codec's segments"
SEGMENT_TYPE = _SEGMENTS.pop()

PUBLISHED_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".json": "application/json",
    ".m4s": SEGMENT_TYPE,
    ".mp4": SEGMENT_TYPE,
}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}
COMPRESSIBLE = (".m3u8", ".mpd", ".json", ".html", ".js", ".mjs", ".css", ".map", ".svg", ".txt")


def type_of(name: str, table: dict[str, str] = PUBLISHED_TYPES) -> str | None:
    dot = name.rfind(".")
    return table.get(name[dot:].lower()) if dot >= 0 else None
