"""What the origin knows about one servable file: validators and precomputed headers.

An ``Entry`` is built once per file version (keyed by path + mtime + size
locally, by the object ETag on S3) and reused by every request until the file
changes, so the hot path copies a ready header dict instead of formatting
dates, ETags and content types per request.

Headers per kind of file:

============  ==============================  ===========================================
kind          Content-Type                     Cache-Control
============  ==============================  ===========================================
HLS playlist  application/vnd.apple.mpegurl   public, max-age=<manifest_ttl> (gzip + Vary)
DASH MPD      application/dash+xml            public, max-age=<manifest_ttl> (gzip + Vary)
asset.json    application/json                public, max-age=<manifest_ttl> (gzip + Vary)
init.mp4      audio/mp4                       public, max-age=31536000, immutable
*.m4s         audio/mp4                       public, max-age=31536000, immutable
single/*.mp4  audio/mp4                       public, max-age=31536000, immutable
static page   text/html, text/javascript ...  public, max-age=60
============  ==============================  ===========================================

Media segments get ``audio/mp4`` rather than ``video/iso.segment``: every
segment here is audio-only ISOBMFF, ``audio/mp4`` is what Apple's authoring
spec and the DASH-IF guidelines use for audio, and MSE players ignore the
HTTP type anyway.  Segments are immutable because an asset id is the hash of
its master and a published asset is never rewritten in place.
"""

from __future__ import annotations

import enum
import gzip
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from tonearm.core.media_types import COMPRESSIBLE, PUBLISHED_TYPES, STATIC_TYPES, type_of

__all__ = ("Kind", "Entry", "Region", "Variant", "classify", "make_entry", "IMMUTABLE")

IMMUTABLE = "public, max-age=31536000, immutable"


class Kind(enum.Enum):
    PLAYLIST = "playlist"
    MPD = "mpd"
    DESCRIPTOR = "descriptor"
    INIT = "init"
    MEDIA = "media"
    STATIC = "static"

    @property
    def content_type(self) -> str:
        return _ASSET_TYPES[self]

    @property
    def compressible(self) -> bool:
        return self in (Kind.PLAYLIST, Kind.MPD, Kind.DESCRIPTOR)

    @property
    def immutable(self) -> bool:
        return self in (Kind.INIT, Kind.MEDIA)


_ASSET_TYPES = {
    Kind.PLAYLIST: PUBLISHED_TYPES[".m3u8"],
    Kind.MPD: PUBLISHED_TYPES[".mpd"],
    Kind.DESCRIPTOR: PUBLISHED_TYPES[".json"],
    Kind.INIT: PUBLISHED_TYPES[".mp4"],
    Kind.MEDIA: PUBLISHED_TYPES[".m4s"],
}
STATIC_COMPRESSIBLE = tuple(s for s in COMPRESSIBLE if s in STATIC_TYPES)


def classify(rel: str) -> Kind | None:
    """Kind of a published file from its relative path; None: not something the origin serves."""
    if rel.endswith(".m4s"):
        return Kind.MEDIA
    if rel.endswith(".m3u8"):
        return Kind.PLAYLIST
    if rel.endswith(".mpd"):
        return Kind.MPD
    if rel.endswith(".mp4"):
        return Kind.INIT if rel.rsplit("/", 1)[-1].startswith("init") else Kind.MEDIA
    if rel == "asset.json":
        return Kind.DESCRIPTOR
    return None


def static_type(rel: str) -> str | None:
    return type_of(rel, STATIC_TYPES)


class Region:
    """Bytes ``[start, start + length)`` of a kept descriptor (``origin.kept``): a body sent with sendfile.

    A segment or single file with a kept descriptor whose pages are in the
    page cache is sent from there, as nginx sends it, instead of from a copy
    in memory.  Only the fast path sends these (``peek(sendable=True)``).
    """

    __slots__ = ("fd", "start", "length")

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd = fd
        self.start = start
        self.length = length

    def __len__(self) -> int:
        return self.length

    def part(self, start: int, end: int) -> "Region":
        return Region(self.fd, self.start + start, end - start)


@dataclass(slots=True, eq=False)
class Variant:
    """One representation of a file: identity, or gzip for manifests (RFC 9110 8.4)."""

    etag: str
    size: int
    body: "bytes | bytearray | Region | None"
    headers: dict[str, str]
    # The same headers as HTTP/1.1 field lines, serialised once per file version for the cached-body fast path.
    head: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())


@dataclass(slots=True, eq=False)
class Entry:
    key: str
    kind: Kind
    version: tuple[Any, ...]  # what must stay equal for the cached entry to stay valid
    mtime: int  # whole seconds, for HTTP-date comparisons (RFC 9110 13.1.3)
    identity: Variant
    gzip: Variant | None
    path: str | None  # local file for streaming when the body is not cached
    checked: float  # loop time of the last validation against storage
    gate: Any = None  # version of the asset's gate (descriptor) when this entry was last validated

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def cost(self) -> int:
        """Bytes this entry holds in memory (for the cache budget)."""
        n = 512 + len(self.key)
        if self.identity.body is not None:
            n += len(self.identity.body)
        if self.gzip is not None and self.gzip.body is not None:
            n += len(self.gzip.body)
        return n


def cache_control(kind: Kind, manifest_ttl: int) -> str:
    if kind.immutable:
        return IMMUTABLE
    if kind is Kind.STATIC:
        return "public, max-age=60"
    return f"public, max-age={manifest_ttl}"


def make_entry(
    *,
    key: str,
    kind: Kind,
    content_type: str,
    version: tuple[Any, ...],
    mtime: float,
    size: int,
    etag: str,
    body: bytes | None,
    path: str | None,
    manifest_ttl: int,
    compressible: bool,
    checked: float = 0.0,
) -> Entry:
    """Build an entry; called in an executor because gzip is CPU work on the body."""
    last_modified = formatdate(int(mtime), usegmt=True)
    common = {
        "Content-Type": content_type,
        "Cache-Control": cache_control(kind, manifest_ttl),
        "Last-Modified": last_modified,
        "Accept-Ranges": "bytes",
    }
    gz: Variant | None = None
    if compressible:
        common["Vary"] = "Accept-Encoding"  # RFC 9110 12.5.5: the body depends on Accept-Encoding
        packed = gzip.compress(body, compresslevel=6, mtime=0) if body else None
        if packed is not None and len(packed) < len(body):  # type: ignore[arg-type]
            # RFC 9110 8.8.3: each representation needs its own entity tag.
            gz_etag = etag[:-1] + '-gz"'
            gz = Variant(gz_etag, len(packed), packed, {**common, "ETag": gz_etag, "Content-Encoding": "gzip"})
    identity = Variant(etag, size, body, {**common, "ETag": etag})
    return Entry(key=key, kind=kind, version=version, mtime=int(mtime), identity=identity, gzip=gz,
                 path=path, checked=checked)
