"""Validate one master and describe it, or reject it with a stable code.

Order: decide the container from its magic bytes (an allowlist, before any
demuxer runs: ``ingest.formats``), probe it with that demuxer forced (cheap,
in-process), check channels, rate and the header's length against the limits,
walk a WAV's chunks, then decode every sample once (stopping past the length
limit) while measuring loudness, and compare what decoded with what the
header promised.

Duration tolerance.  Lossless codecs (PCM, FLAC, ALAC, ...) state their exact
sample count, so decoded and header length must agree to within 1 ms.  Lossy
codecs carry encoder delay and padding that containers describe with varying
care (MP3 LAME gapless info, MP4 edit lists, Ogg pre-skip), so they get
0.1 s plus 0.05% of the length (1.8 s per hour).  A header length that ffmpeg
itself only estimated from the bit rate (an MP3 without a Xing/Info/VBRI
frame, raw ADTS AAC) is not a claim and is not compared: such a file cut
between frames is indistinguishable from a shorter one (a known limit; LAME
and ffmpeg write the Info frame by default).
Ogg states no length at all (ffmpeg's "header" length is the last page's
granule position); a cut Ogg file is found by its missing end-of-stream page
(:mod:`ingest.ogg`).  Decode errors also shorten the audio: a shortfall of at
most 0.5 s per reported error is blamed on damaged frames (``decode_error``),
anything more means the end is missing (``truncated``).

Audio with video (a music video, a screen recording): accepted; the first
audio stream is validated and published, video is ignored, and
``MasterInfo.has_video`` is set so an operator can tell.  Video only:
``no_audio_stream``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ingest.decode import FILTER_CHAIN, MEASURE_CODEC, MEASURE_LOGLEVEL, Decoded, decode, parse_decode_log
from ingest.errors import (
    DECODE_ERROR,
    DURATION_MISMATCH,
    FFMPEG_FAILED,
    FFMPEG_TIMEOUT,
    NOT_AUDIO,
    TOO_LONG,
    TRUNCATED,
    UNSUPPORTED_CHANNELS,
    UNSUPPORTED_SAMPLE_RATE,
    ZERO_DURATION,
    reject,
)
from ingest.formats import CONTAINERS, Container, sniff
from ingest.ogg import ends_with_eos
from ingest.probe import Probe, probe
from ingest.riff import read_wav_layout
from ingest.tags import read_tags
from tonearm.core.config import IngestConfig
from tonearm.core.ffmpeg import FfmpegError, FfmpegInfo, FfmpegTimeout
from tonearm.core.model import Loudness, MasterInfo, MeasureBranch

MIN_CHANNELS, MAX_CHANNELS = 1, 8
MIN_RATE, MAX_RATE = 8_000, 192_000
LOSSLESS_TOLERANCE_S = 0.001
LOSSY_TOLERANCE_S = 0.1
LOSSY_TOLERANCE_FRACTION = 0.0005
LOSSLESS_CODECS = frozenset({"flac", "alac", "wavpack", "tta", "ape", "mlp", "truehd", "shorten"})
MAX_ERRORS_KEPT = 5
# A failed packet costs one frame of audio (FLAC's largest common block, 4608 samples, is ~0.1 s
# at 44.1 kHz); a shortfall beyond 0.5 s per failed packet means the end is missing.
SECONDS_LOST_PER_ERROR = 0.5
# Loudness range is a statistic of 3 s short-term values (EBU Tech 3342); with only a few of them
# ffmpeg's ebur128 reports artefacts (20 LU for a steady 3 s tone), so short masters get none.
MIN_LRA_SECONDS = 4.0


def is_lossless(codec: str) -> bool:
    return codec.startswith("pcm_") or codec in LOSSLESS_CODECS


def tolerance_s(codec: str, header_s: float) -> float:
    if is_lossless(codec):
        return LOSSLESS_TOLERANCE_S
    return LOSSY_TOLERANCE_S + LOSSY_TOLERANCE_FRACTION * header_s


def allowed_container(path: Path) -> Container:
    """The container from the allowlist (``ingest.formats``) the bytes are, or ``not_audio``: no demuxer runs first."""
    with open(path, "rb") as f:
        found = sniff(f)
    if found is None:
        raise reject(NOT_AUDIO, "not an audio container tonearm accepts (" + ", ".join(CONTAINERS) + ")")
    return found


def max_decode_seconds(limits: IngestConfig, channels: int, sample_rate: int) -> float:
    """The longest audio a master may have: ``max_duration``, less for many channels at high rates."""
    return min(limits.max_duration, limits.max_samples / (channels * sample_rate))


@dataclass(frozen=True, kw_only=True)
class HeaderCheck:
    """What the cheap, header-only checks learned: enough to start the encoder before the full decode.

    ``check_header`` reads only magic bytes, the container header (probe) and a WAV's chunk list;
    ``judge`` finishes the job from a decode log, whether from ``decode`` (the separate pass)
    or from a measurement branch inside the encoder's own run (``measurement_branch``).
    """

    path: Path
    size: int
    allowed: Container
    probe: Probe
    header_s: float | None
    header_is_ours: bool  # True when we read the length claim ourselves (WAV chunks)
    riff_info: dict[str, str]
    longest: float  # the most audio this master may have (limits)
    where: dict[str, str]

    @property
    def read_limit_s(self) -> float:
        """Decoding stops just past the limit, so a header that understates the length costs no more CPU."""
        return self.longest + 1.0

    def provisional(self, *, asset_id: str, source_name: str | None = None) -> MasterInfo:
        """A ``MasterInfo`` from the header alone (length and loudness unknown): what an encoder needs to start."""
        pr = self.probe
        return MasterInfo(
            asset_id=asset_id, source_name=self.path.name if source_name is None else source_name, size=self.size,
            container=pr.container, demuxer=self.allowed.demuxer, codec=pr.codec, sample_rate=pr.sample_rate,
            channels=pr.channels, channel_layout=pr.channel_layout,
            bits_per_sample=pr.bits_per_sample if is_lossless(pr.codec) else None,
            duration_s=self.header_s if self.header_s is not None else self.longest,
            header_duration_s=self.header_s,
            loudness=Loudness(integrated_lufs=None, loudness_range_lu=None, true_peak_dbtp=None),
            has_video=pr.has_video,
        )


def inspect(path: Path, *, asset_id: str, ffmpeg: FfmpegInfo, timeout: float, source_name: str | None = None,
            limits: IngestConfig = IngestConfig()) -> MasterInfo:
    """Everything ingest checks about one master; raises ``Rejected`` with a code from ``ingest.errors``."""
    head = check_header(path, ffmpeg=ffmpeg, timeout=timeout, limits=limits)
    dec = _decode(head.path, head.allowed.demuxer, ffmpeg, timeout, head.read_limit_s, head.where)
    return judge(head, dec, asset_id=asset_id, source_name=source_name, limits=limits)


def measurement_branch(head: HeaderCheck) -> MeasureBranch:
    """The separate decode pass's filters as a branch of another ffmpeg run (same filters, same log level)."""
    return MeasureBranch(filters=FILTER_CHAIN, codec=MEASURE_CODEC, loglevel=MEASURE_LOGLEVEL,
                         read_limit_s=head.read_limit_s)


def judge_log(head: HeaderCheck, log_text: str, *, asset_id: str, source_name: str | None = None,
              limits: IngestConfig = IngestConfig()) -> MasterInfo:
    """``judge`` on the stderr of a run that carried ``measurement_branch(head)``."""
    return judge(head, parse_decode_log(log_text), asset_id=asset_id, source_name=source_name, limits=limits)


def check_header(path: Path, *, ffmpeg: FfmpegInfo, timeout: float,
                 limits: IngestConfig = IngestConfig()) -> HeaderCheck:
    """The checks that read no audio: container allowlist, probe, channels, rate, WAV chunks, header length."""
    path = Path(path)
    size = os.stat(path).st_size
    allowed = allowed_container(path)
    pr = probe(path, allowed, ffmpeg=ffmpeg, timeout=timeout)
    where = {"container": pr.container, "codec": pr.codec}
    if pr.channels == 0 or pr.sample_rate == 0:  # a demuxer guessed from the name, no real stream
        raise reject(NOT_AUDIO, "no audio stream parameters could be read; not a recognised audio file", **where)
    if not MIN_CHANNELS <= pr.channels <= MAX_CHANNELS:
        raise reject(UNSUPPORTED_CHANNELS, f"{pr.channels} channels; masters must have 1 to 8",
                     channels=pr.channels, channel_layout=pr.channel_layout, **where)
    if not MIN_RATE <= pr.sample_rate <= MAX_RATE:
        raise reject(UNSUPPORTED_SAMPLE_RATE, f"{pr.sample_rate} Hz; masters must be 8000 to 192000 Hz",
                     sample_rate=pr.sample_rate, **where)

    header_s = pr.header_duration_s
    header_is_ours = False
    riff_info: dict[str, str] = {}
    wav = read_wav_layout(path) if pr.container == "wav" else None
    if wav is not None:
        riff_info = wav.info
        if wav.trailing_after_data:
            raise reject(DURATION_MISMATCH,
                         f"the WAV header claims {wav.data_size} bytes of audio but "
                         f"{wav.trailing_after_data} more bytes follow the data chunk",
                         header_data_bytes=wav.data_size, trailing_bytes=wav.trailing_after_data, **where)
        if wav.data_size is None:
            header_s, header_is_ours = None, True  # open-ended data chunk: no length claim
        elif wav.header_frames is not None and wav.sample_rate:
            header_s, header_is_ours = wav.header_frames / wav.sample_rate, True

    longest = max_decode_seconds(limits, pr.channels, pr.sample_rate)
    if header_s is not None and header_s > longest:
        raise reject(TOO_LONG, f"the header states {header_s:.1f} s; masters of {pr.channels} channel(s) at "
                     f"{pr.sample_rate} Hz may last at most {longest:.1f} s",
                     header_s=round(header_s, 6), max_s=round(longest, 6), **where)
    return HeaderCheck(path=path, size=size, allowed=allowed, probe=pr, header_s=header_s,
                       header_is_ours=header_is_ours, riff_info=riff_info, longest=longest, where=where)


def judge(head: HeaderCheck, dec: Decoded, *, asset_id: str, source_name: str | None = None,
          limits: IngestConfig = IngestConfig()) -> MasterInfo:
    """Compare what decoded with what the header promised; the accepted master's ``MasterInfo``."""
    path, pr, where, longest = head.path, head.probe, head.where, head.longest
    header_s = head.header_s
    if dec.duration_estimated and not head.header_is_ours:
        header_s = None
    decoded_s = dec.samples / pr.sample_rate
    if decoded_s > longest:
        raise reject(TOO_LONG, f"more than {longest:.1f} s of audio decode (the limit for {pr.channels} "
                     f"channel(s) at {pr.sample_rate} Hz); decoding was stopped there",
                     decoded_s=round(decoded_s, 6), max_s=round(longest, 6), **where)
    errors = dec.errors[:MAX_ERRORS_KEPT]
    timing = {"decoded_s": round(decoded_s, 6), "header_s": None if header_s is None else round(header_s, 6),
              "decoded_samples": dec.samples, **where}
    if dec.samples == 0:
        if dec.errors:
            raise reject(DECODE_ERROR, f"nothing decodes: {dec.errors[0]}", errors=errors, **timing)
        raise reject(ZERO_DURATION, "the audio stream holds no samples", **timing)
    if pr.container == "ogg" and not ends_with_eos(path):
        raise reject(TRUNCATED, "the Ogg stream ends without an end-of-stream page; the file looks cut off",
                     errors=errors, **timing)
    tol = tolerance_s(pr.codec, header_s or 0.0)
    shortfall = (header_s - decoded_s) if header_s is not None else 0.0
    if shortfall > tol and shortfall > dec.failed_packets * SECONDS_LOST_PER_ERROR:
        raise reject(TRUNCATED, f"only {decoded_s:.3f} s of the {header_s:.3f} s the header promises decode; "
                     "the file looks cut off", tolerance_s=tol, errors=errors, **timing)
    if dec.errors:
        raise reject(DECODE_ERROR, f"{len(dec.errors)} decode error(s), first: {dec.errors[0]}",
                     error_count=len(dec.errors), errors=errors, **timing)
    if header_s is not None and decoded_s > header_s + tol:
        raise reject(DURATION_MISMATCH, f"{decoded_s:.3f} s decode but the header states {header_s:.3f} s",
                     tolerance_s=tol, **timing)

    tags, artwork = read_tags(path, head.riff_info, max_read=limits.max_tag_bytes, max_artwork=limits.max_artwork_bytes)
    bits = dec.summary.bits_per_sample if dec.summary and dec.summary.bits_per_sample else pr.bits_per_sample
    return MasterInfo(
        asset_id=asset_id,
        source_name=path.name if source_name is None else source_name,
        size=head.size,
        container=pr.container,
        demuxer=head.allowed.demuxer,
        codec=pr.codec,
        sample_rate=pr.sample_rate,
        channels=pr.channels,
        channel_layout=pr.channel_layout,
        bits_per_sample=bits if is_lossless(pr.codec) else None,
        duration_s=decoded_s,
        header_duration_s=header_s,
        loudness=Loudness(
            integrated_lufs=dec.integrated_lufs,
            loudness_range_lu=dec.loudness_range_lu if decoded_s >= MIN_LRA_SECONDS else None,
            true_peak_dbtp=dec.true_peak_dbtp,
            sample_peak_dbfs=dec.sample_peak_dbfs,
            silent=dec.silent,
            clipping=dec.clipping,
        ),
        tags=tags,
        artwork=artwork,
        has_video=pr.has_video,
    )


def _decode(path: Path, demuxer: str, ffmpeg: FfmpegInfo, timeout: float, max_seconds: float,
            where: dict[str, str]) -> Decoded:
    try:
        return decode(path, demuxer=demuxer, ffmpeg=ffmpeg, timeout=timeout, max_seconds=max_seconds)
    except FfmpegTimeout as exc:
        raise reject(FFMPEG_TIMEOUT, f"decoding did not finish within {timeout:.0f} s", **where) from exc
    except FfmpegError as exc:  # ffmpeg gives up when too many packets fail (-max_error_rate)
        dec = parse_decode_log(exc.stderr)
        if dec.errors:
            raise reject(DECODE_ERROR, f"decoding failed: {dec.errors[-1]}", errors=dec.errors[:MAX_ERRORS_KEPT],
                         error_count=len(dec.errors), **where) from None
        raise reject(FFMPEG_FAILED, str(exc), stderr_tail=exc.tail(), **where) from None
