"""HLS multivariant and media playlists for fMP4 audio renditions (RFC 8216)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Sequence

from manifests import hls_tags as T
from manifests.bandwidth import average_bandwidth, peak_bandwidth, target_duration
from manifests.errors import ManifestError
from manifests.loudness import Normalisation
from manifests.protection import hls_aes128_key, hls_sample_aes_keys
from manifests.timeline import extinf_ticks
from tonearm.core.codecs import codec
from tonearm.core.model import PackagedRendition


def seconds(ticks: int, timescale: int) -> str:
    """Deterministic decimal seconds: six places, trailing zeros dropped ("6.4", "0.021333")."""
    exact = Fraction(ticks, timescale)
    q = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
    text = format(q, "f").rstrip("0")
    return text + "0" if text.endswith(".") else text


def _quote(value: str) -> str:
    if '"' in value or "\n" in value or "\r" in value:
        raise ManifestError(f"HLS quoted-string cannot contain quotes or line breaks: {value!r}")
    return f'"{value}"'


def _byterange(length: int, offset: int) -> str:
    return f"{length}@{offset}"


def media_playlist(p: PackagedRendition, *, asset_id: str = "", rel: str = "") -> str:
    """One rendition's playlist: EXT-X-MAP + one EXTINF per segment (+ EXT-X-BYTERANGE in one file).

    EXTINF follows manifests.timeline: each segment's media duration, the last
    one ending the master's duration after zero, so the playlist lasts the
    master's duration on every rung and every segment starts at its tfdt.
    A protected rendition (``asset_id`` and ``rel``, the playlist's path in the asset, place its
    key URIs) has its EXT-X-KEY lines (manifests.protection).
    """
    lines = [T.EXTM3U, f"{T.VERSION}:{T.PROTOCOL_VERSION}", f"{T.TARGETDURATION}:{target_duration(p)}",
             f"{T.PLAYLIST_TYPE}:{T.VOD}", T.INDEPENDENT_SEGMENTS]
    prot = p.protection
    if prot is not None and prot.scheme == "cbcs":
        lines += [f"{T.KEY}:{attrs}" for attrs in hls_sample_aes_keys(prot, asset_id, rel)]
    map_attrs = f"{T.URI}={_quote(p.init_uri)}"
    if p.single_file:
        if p.init_range is None:
            raise ManifestError(f"{p.rung.name}: single-file rendition without an init byte range")
        first, last = p.init_range
        map_attrs += f",{T.ATTR_BYTERANGE}={_quote(_byterange(last - first + 1, first))}"
    lines.append(f"{T.MAP}:{map_attrs}")
    for s, ticks in zip(p.segments, extinf_ticks(p)):
        if prot is not None and prot.scheme == "aes-128":
            if s.iv is None:
                raise ManifestError(f"{p.rung.name}: aes-128 segment {s.index} has no IV")
            lines.append(f"{T.KEY}:{hls_aes128_key(asset_id, rel, s.iv)}")
        lines.append(f"{T.EXTINF}:{seconds(ticks, p.timescale)},")
        if p.single_file:
            # RFC 8216 4.3.2.2: an explicit offset on every range, so each line stands alone.
            lines.append(f"{T.BYTERANGE}:{_byterange(s.size, s.offset)}")
        lines.append(s.uri)
    lines.append(T.ENDLIST)
    return "\n".join(lines) + "\n"


def variant_order(renditions: Sequence[PackagedRendition]) -> list[PackagedRendition]:
    """Order variants so the first is a good start rung.

    hls.js starts on the first variant listed (startLevel unset) and Apple
    clients start on the first too: lead with the AAC rung nearest 128 kb/s
    (AAC-LC plays everywhere and this rate loads fast), then the other AAC
    rungs from the highest rate down, then Opus, then lossless last, each
    from the highest rate down.
    """
    aac = [p for p in renditions if p.rung.codec == "aac"]
    first = min(aac, key=lambda p: abs((p.rung.bitrate or 0) - 128_000)) if aac else None
    rest = sorted((p for p in renditions if p is not first),
                  key=lambda p: (codec(p.rung.codec).order, -average_bandwidth(p)))
    return ([first] if first else []) + rest


def master_playlist(renditions: Sequence[PackagedRendition], uri_of: dict[str, str],
                    loudness: Normalisation | None = None, *, asset_id: str = "", rel: str = "") -> str:
    """Audio-only multivariant playlist: one EXT-X-STREAM-INF per rendition, each with CODECS.

    Lossless is a variant of its own with CODECS="fLaC", so a client that
    cannot decode it filters that variant out instead of failing the stream.
    The loudness figures are EXT-X-SESSION-DATA (RFC 8216 4.3.4.4), one
    DATA-ID per known figure with its number as VALUE (see manifests.loudness).
    """
    lines = [T.EXTM3U, f"{T.VERSION}:{T.PROTOCOL_VERSION}", T.INDEPENDENT_SEGMENTS]
    for data_id, value in loudness.hls_session_data() if loudness else ():
        lines.append(f"{T.SESSION_DATA}:{T.DATA_ID}={_quote(data_id)},{T.VALUE}={_quote(value)}")
    prot = renditions[0].protection if renditions else None
    if prot is not None and prot.scheme == "cbcs":  # RFC 8216 4.3.4.5: the keys, before any media playlist
        lines += [f"{T.SESSION_KEY}:{attrs}" for attrs in hls_sample_aes_keys(prot, asset_id, rel)]
    for p in variant_order(renditions):
        attrs = [f"{T.BANDWIDTH}={peak_bandwidth(p)}", f"{T.AVERAGE_BANDWIDTH}={average_bandwidth(p)}",
                 f"{T.CODECS}={_quote(p.codecs)}"]
        lines.append(f"{T.STREAM_INF}:{','.join(attrs)}")
        lines.append(uri_of[p.rung.name])
    return "\n".join(lines) + "\n"
