"""The codec table: everything tonearm knows about each codec a rung may use, in one place.

Every stage reads this table and nothing else about codecs: config validation
(which names, which bit rates), the transcoder (encoder and its options, the
channel rule), ``tonearm doctor`` and the ffmpeg check (which encoders are
needed), the packager (sample entry -> family and RFC 6381 CODECS), the
manifest writers (family order), the origin and storage (MIME type).
Adding a codec is one entry here plus its tests (README, "Extending tonearm").

Segment alignment: every rung cuts segments on the same instants, so a
segment must hold whole frames of every codec at the ladder rate; the
segment length must be a multiple of :data:`ALIGNMENT_SAMPLES`, the least
common multiple of the frame sizes below (AAC 1024, Opus 960 -> 15360,
0.32 s at 48 kHz; FLAC's 3840-sample blocks divide it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ("Codec", "CODECS", "ALIGNMENT_SAMPLES", "codec", "codec_of_fourcc", "needed_encoders")


def _no_options(bitrate: int | None, channels: int) -> dict[str, Any]:
    return {}


def _opus_options(bitrate: int | None, channels: int) -> dict[str, Any]:
    # Constrained VBR: libopus's free VBR spends 1.5x the nominal rate on tonal music, which breaks
    # the ladder's ordering and makes BANDWIDTH a poor predictor.  More than two channels need
    # RFC 7845 mapping family 1 (Vorbis channel order, up to 8 channels).
    return {"vbr": "constrained", **({"mapping_family": 1} if channels > 2 else {})}


def _flac_options(bitrate: int | None, channels: int) -> dict[str, Any]:
    # FLAC in MP4 is experimental in ffmpeg 5.1's muxer (f_strict reaches only the muxer: on the
    # encoder "experimental" would allow non-streamable 32-bit FLAC).  3840-sample blocks tile the
    # alignment grid, so lossless segments cut where AAC and Opus do; ffmpeg's default 4608 does not.
    return {"f_strict": "experimental", "frame_size": 3840}


@dataclass(frozen=True, kw_only=True)
class Codec:
    name: str  # as configured: [[ladder.rungs]] codec = "aac"
    encoder: str  # ffmpeg encoder
    fourcc: str  # ISOBMFF sample entry type the encoder writes
    codecs: str  # RFC 6381 string; "{aot}" is the AAC audio object type read from the esds
    frame_samples: int  # samples per frame at 48 kHz: segments hold whole frames
    lossless: bool = False  # no bit rate; keeps the master's channel layout
    max_channels: int | None = 2  # channel rule for lossy rungs: more channels are downmixed to stereo
    bitrates: tuple[int, int] | None = (8_000, 512_000)  # allowed bit rates, bits/s (None: lossless)
    mime: str = "audio/mp4"  # CMAF audio, init and media segments alike
    options: Callable[[int | None, int], dict[str, Any]] = field(default=_no_options, repr=False)

    @property
    def family(self) -> str:
        """One DASH AdaptationSet and one HLS ordering rank per family."""
        return self.name

    @property
    def order(self) -> int:
        """Rank in manifests: players start on the first family they can play (AAC first)."""
        return list(CODECS).index(self.name)


# In manifest order: AAC (plays everywhere) first, lossless last.
CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec(name="aac", encoder="aac", fourcc="mp4a", codecs="mp4a.40.{aot}", frame_samples=1024),
    Codec(name="opus", encoder="libopus", fourcc="Opus", codecs="opus", frame_samples=960, options=_opus_options),
    Codec(name="flac", encoder="flac", fourcc="fLaC", codecs="fLaC", frame_samples=3840, lossless=True,
          max_channels=None, bitrates=None, options=_flac_options),
)}

ALIGNMENT_SAMPLES = math.lcm(*(c.frame_samples for c in CODECS.values()))


def codec(name: str) -> Codec:
    """The table entry for a configured codec name (KeyError names the known ones)."""
    try:
        return CODECS[name]
    except KeyError:
        raise KeyError(f"codec {name!r} is not one of {', '.join(CODECS)}") from None


def codec_of_fourcc(fourcc: str) -> Codec | None:
    return next((c for c in CODECS.values() if c.fourcc == fourcc), None)


def needed_encoders(names: "list[str] | tuple[str, ...] | None" = None) -> tuple[str, ...]:
    """ffmpeg encoders the given codecs (default: all of them) need."""
    return tuple(dict.fromkeys(codec(n).encoder for n in (names if names is not None else CODECS)))
