"""Plain data types that flow between stages.

Stages never reach into each other's internals: ingest produces a
``MasterInfo``, transcode produces ``EncodedRendition``s, the packager emits
``SegmentEvent``s and returns ``PackagedRendition``s, and manifests render
from those.  Times are integer ticks in the track timescale until a manifest
is rendered (shaka-packager's rule), so nothing drifts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec


class AssetState(str, enum.Enum):
    RECEIVED = "received"
    VALIDATED = "validated"
    TRANSCODING = "transcoding"
    PACKAGING = "packaging"
    PUBLISHED = "published"
    QUARANTINED = "quarantined"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class Loudness:
    """EBU R128 measurements of a whole master."""

    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None = None
    silent: bool = False
    clipping: bool = False


@dataclass(frozen=True, kw_only=True)
class Artwork:
    mime: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Tags:
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    isrc: str | None = None
    track_number: int | None = None


@dataclass(frozen=True, kw_only=True)
class MasterInfo:
    """What ingest learned about one accepted master."""

    asset_id: str  # sha256 of the master's bytes, hex
    source_name: str  # original file name, for people only
    size: int
    container: str  # ffmpeg format name, e.g. "flac", "wav", "mov,mp4,m4a,3gp,3g2,mj2"
    demuxer: str  # the ffmpeg demuxer every open of this master forces (ingest.formats decided it)
    codec: str  # ffmpeg codec name of the audio stream
    sample_rate: int
    channels: int
    channel_layout: str | None
    bits_per_sample: int | None
    duration_s: float  # decoded duration
    header_duration_s: float | None
    loudness: Loudness
    tags: Tags = field(default_factory=Tags)
    artwork: Artwork | None = None
    has_video: bool = False


class Rung(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rendition of the ladder, as configured.

    A msgspec struct because config reads rungs from TOML with it: a key that is
    not one of these is an error, not ignored.  Frozen and hashable like the
    other plain types.
    """

    name: str  # path-safe id, e.g. "aac_256k"
    codec: str  # a name in tonearm.core.codecs.CODECS
    bitrate: int | None = None  # bits/s; None (left out) for a lossless codec
    sample_rate: int = 48000
    channels: Annotated[int, msgspec.Meta(ge=1, le=8)] | None = None  # None: keep the master's layout (transcode)


@dataclass(frozen=True, kw_only=True)
class EncodedRendition:
    """One rung as written by the encoder: a plain MP4 in the staging area."""

    rung: Rung
    path: Path
    channels: int


@dataclass(frozen=True, kw_only=True)
class SegmentEvent:
    """Announced by the packager for every media segment it writes."""

    rung: str
    index: int  # 1-based
    start: int  # ticks, = tfdt baseMediaDecodeTime
    duration: int  # ticks
    size: int  # bytes of the segment (moof+mdat, plus styp if any)
    uri: str  # relative to the rendition's playlist
    offset: int | None = None  # byte offset in the single file, single-file layout only
    iv: str | None = None  # hex AES-128 IV of a whole-segment-encrypted segment (scheme "aes-128" only)


@dataclass(frozen=True, kw_only=True)
class Protection:
    """What the manifests say about an encrypted rendition: public facts only, never the key."""

    scheme: str  # "cbcs", "cenc" or "aes-128" (tonearm.core.config.PROTECTION_SCHEMES)
    kid: str  # key id, 32 lowercase hex digits
    pssh: dict[str, str] = field(default_factory=dict)  # DRM system id (uuid) -> base64 pssh box in the init


@dataclass(frozen=True, kw_only=True)
class PackagedRendition:
    """Everything the manifest writers need to know about one rendition."""

    rung: Rung
    codecs: str  # RFC 6381 string read from the init segment, e.g. "mp4a.40.2"
    timescale: int  # = sample rate
    sample_rate: int
    channels: int
    init_uri: str
    init_size: int
    segments: tuple[SegmentEvent, ...]
    priming: int  # ticks skipped at the start (edit list media_time)
    presentation_duration: int  # ticks, = master duration (edit list duration)
    single_file: bool = False
    index_range: tuple[int, int] | None = None  # sidx byte range, single-file only
    init_range: tuple[int, int] | None = None  # init byte range, single-file only
    protection: Protection | None = None  # None: clear CMAF

    @property
    def media_duration(self) -> int:
        return sum(s.duration for s in self.segments)


@dataclass(frozen=True, kw_only=True)
class JobError:
    """A machine-readable reason a master was rejected or a job failed."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MeasureBranch:
    """A measurement tapped off a master's decoded audio inside another stage's ffmpeg run.

    One decode per master: ingest states which filters measure a master (plain data, applied in
    order to the first audio stream as decoded, before any resampling), transcode adds them as one
    more ``asplit`` branch of its encoder graph ending in the null muxer, and ingest parses the
    run's stderr.  ``read_limit_s`` bounds how much of the master the whole run reads.
    """

    filters: tuple[tuple[str, dict[str, str]], ...]  # (filter name, options), in order
    codec: str  # what the null muxer is fed
    loglevel: str  # the run's -loglevel, so the parser sees the lines it needs
    read_limit_s: float
