"""Tags and embedded artwork, read with mutagen.

Each tagging scheme names the same five fields differently; the table below
is the one place that maps them.  Artwork is the front cover (picture type 3)
when there is one, else the first picture; its MIME type comes from the
image's magic bytes because declared types are often wrong ("image/jpg").
Unreadable tags never reject a master: the audio is what is validated.

Bounds: mutagen reads through :class:`_BoundedReader`, which refuses to read
more than ``max_read`` bytes in all (a 2 GiB "picture" is never loaded), so
a master whose tags need more is published without tags; a picture over
``max_artwork`` bytes is not taken as artwork; each text value is cut to
``MAX_TAG_CHARS`` characters.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any, BinaryIO

import mutagen
from mutagen.flac import Picture

from tonearm.core.model import Artwork, Tags

log = logging.getLogger("tonearm.ingest")

_ID3 = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "isrc": "TSRC", "track": "TRCK"}
_VORBIS = {"title": "title", "artist": "artist", "album": "album", "isrc": "isrc", "track": "tracknumber"}
_MP4 = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "isrc": "----:com.apple.iTunes:ISRC",
        "track": "trkn"}
_FRONT_COVER = 3  # ID3v2.4 APIC / FLAC METADATA_BLOCK_PICTURE picture type
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"BM", "image/bmp"))


MAX_TAG_CHARS = 1024
DEFAULT_MAX_READ = 64 << 20
DEFAULT_MAX_ARTWORK = 16 << 20


class TagsTooLarge(Exception):
    """The tags would need more bytes than the bound allows."""


class _BoundedReader(io.RawIOBase):
    """A read-only file that raises once more than ``budget`` bytes have been asked for in all."""

    def __init__(self, f: BinaryIO, budget: int, name: str) -> None:
        self._f, self._left, self.name = f, budget, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        if len(b) > self._left:
            raise TagsTooLarge(f"reading the tags needs more than the {self._left}-byte budget left")
        n = self._f.readinto(b)
        self._left -= n or 0
        return n or 0


def read_tags(path: Path, riff_info: dict[str, str] | None = None, *, max_read: int = DEFAULT_MAX_READ,
              max_artwork: int = DEFAULT_MAX_ARTWORK) -> tuple[Tags, Artwork | None]:
    try:
        with open(path, "rb") as raw:
            f = mutagen.File(io.BufferedReader(_BoundedReader(raw, max_read, str(path)), 65536))
    except Exception as exc:  # mutagen raises many types on odd files; tags are optional
        log.info("tags of %s unreadable: %s", path, exc)
        f = None
    raw: dict[str, Any] = {}
    pictures: list[tuple[int, bytes, str]] = []  # (type, data, declared mime)
    tags = getattr(f, "tags", None)
    if tags is not None:
        kind = type(tags).__name__
        if kind == "ID3" or hasattr(tags, "getall"):
            raw = {k: _id3_text(tags.get(frame)) for k, frame in _ID3.items()}
            pictures = [(p.type, p.data, p.mime) for p in tags.getall("APIC")]
        elif kind == "MP4Tags":
            raw = {k: tags.get(key) for k, key in _MP4.items()}
            raw["track"] = raw["track"][0][0] if raw["track"] else None
            isrc = raw["isrc"]
            raw["isrc"] = bytes(isrc[0]).decode("utf-8", "replace") if isrc else None
            raw = {k: (v[0] if isinstance(v, list) and v else v) for k, v in raw.items()}
            pictures = [(_FRONT_COVER, bytes(c), "") for c in tags.get("covr", [])]
        else:  # Vorbis comments: FLAC, Ogg Vorbis, Ogg Opus
            raw = {k: (tags.get(key) or [None])[0] for k, key in _VORBIS.items()}
            for b64 in tags.get("metadata_block_picture", []):
                try:
                    pic = Picture(base64.b64decode(b64))
                    pictures.append((pic.type, pic.data, pic.mime))
                except Exception as exc:
                    log.info("bad METADATA_BLOCK_PICTURE in %s: %s", path, exc)
    for pic in getattr(f, "pictures", None) or []:  # FLAC picture blocks
        pictures.append((pic.type, pic.data, pic.mime))
    for key, value in (riff_info or {}).items():  # WAV LIST/INFO, when no ID3 chunk says otherwise
        if not raw.get(key):
            raw[key] = value
    return _tags(raw), _artwork([p for p in pictures if len(p[1]) <= max_artwork])


def _id3_text(frame: Any) -> str | None:
    return str(frame.text[0]) if frame is not None and getattr(frame, "text", None) else None


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()[:MAX_TAG_CHARS]
    return text or None


def _tags(raw: dict[str, Any]) -> Tags:
    track = raw.get("track")
    number = None
    if isinstance(track, int):
        number = track
    elif track is not None and (m := re.match(r"\s*(\d+)", str(track))):  # "3", "3/12"
        number = int(m.group(1))
    isrc = _clean(raw.get("isrc"))
    return Tags(
        title=_clean(raw.get("title")),
        artist=_clean(raw.get("artist")),
        album=_clean(raw.get("album")),
        isrc=isrc.replace("-", "").upper() if isrc else None,  # ISO 3901: 12 characters, hyphens are display only
        track_number=number if number and number > 0 else None,
    )


def sniff_mime(data: bytes, declared: str = "") -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return declared or "application/octet-stream"


def _artwork(pictures: list[tuple[int, bytes, str]]) -> Artwork | None:
    pictures = [p for p in pictures if p[1]]
    if not pictures:
        return None
    kind, data, declared = next((p for p in pictures if p[0] == _FRONT_COVER), pictures[0])
    return Artwork(mime=sniff_mime(data, declared), size=len(data), sha256=hashlib.sha256(data).hexdigest())
