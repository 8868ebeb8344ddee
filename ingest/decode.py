"""One full decode of the first audio stream, measuring as it goes.

A single ffmpeg run decodes every sample through ``ebur128`` (EBU R128 /
ITU-R BS.1770-4: integrated loudness, loudness range, true peak with 4x
oversampling) and ``astats`` (sample peak, flatness at the peak, number of
samples), and we read the error lines it logs: ``-loglevel level+info``
prefixes every line with its level, so demuxer and decoder errors are told
apart from the statistics without a second pass.

Mono is measured as one channel, as BS.1770 defines it (a -20 dBFS sine reads
-23 LUFS); players that treat mono as dual-mono will hear it 3 dB louder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ingest.probe import Probe, parse_summary
from tonearm.core.ffmpeg import FfmpegInfo, master_input, run

# Silence: no sample above one 16-bit LSB (20*log10(1/32768) = -90.3 dBFS), so dither-only
# 16-bit files count as silent too.
SILENCE_PEAK_DBFS = -90.0
# Clipping: the peak sits at full scale (within 0.01 dB) *and* consecutive samples stay there
# (astats "Flat factor" > 0: a clipped waveform is flat-topped, a clean sine touching 0 dBFS is
# not); or any sample is over full scale (float masters), which clips on any fixed-point output.
CLIP_PEAK_DBFS = -0.01
# ebur128 reports the absolute gate (-70 LUFS) when every block is gated out: no loudness at all.
ABSOLUTE_GATE_LUFS = -70.0

# The measuring filters as plain data (name, options): the separate pass joins them into ``-af``,
# the shared pass hands them to transcode as a branch of the encoder's own graph (MeasureBranch).
FILTER_CHAIN: tuple[tuple[str, dict[str, str]], ...] = (
    ("ebur128", {"peak": "true", "framelog": "verbose"}),
    ("astats", {"measure_perchannel": "none", "measure_overall": "Peak_level+Flat_factor+Number_of_samples"}),
)
MEASURE_CODEC = "pcm_f64le"  # ebur128 emits doubles: no conversion between the filters and the sink
MEASURE_LOGLEVEL = "level+info"  # every line prefixed with its level: errors told apart from statistics
FILTERS = ",".join(name + "=" + ":".join(f"{k}={v}" for k, v in opts.items()) for name, opts in FILTER_CHAIN)

_FLOAT = r"(-?(?:inf|nan|\d+(?:\.\d+)?))"
_I_RE = re.compile(r"^\s*I:\s+" + _FLOAT + r" LUFS", re.M)
_LRA_RE = re.compile(r"^\s*LRA:\s+" + _FLOAT + r" LU", re.M)
_TP_RE = re.compile(r"True peak:\s+Peak:\s+" + _FLOAT + r" dBFS")
_ASTAT_RE = re.compile(r"\[Parsed_astats_\d+ @ [^\]]+\] \[info\] (?P<key>[^:\n]+): " + _FLOAT)
_PROBLEM_RE = re.compile(r"\[(error|fatal)\] ")
_ADDR_RE = re.compile(r" @ 0x[0-9a-f]+")  # context pointers differ per run; keep messages stable
_ESTIMATE = "Estimating duration from bitrate"


@dataclass(frozen=True, kw_only=True)
class Decoded:
    samples: int  # per channel, as decoded
    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None
    flat_factor: float
    errors: list[str] = field(default_factory=list)
    duration_estimated: bool = False  # ffmpeg guessed the header duration from the bit rate
    summary: Probe | None = None  # the stream summary ffmpeg printed for this run

    @property
    def failed_packets(self) -> int:
        """Packets lost to errors: ffmpeg reports each once as "Error while decoding stream"."""
        return sum("Error while decoding" in e for e in self.errors) or len(self.errors)

    @property
    def silent(self) -> bool:
        return self.sample_peak_dbfs is None or self.sample_peak_dbfs < SILENCE_PEAK_DBFS

    @property
    def clipping(self) -> bool:
        peak = self.sample_peak_dbfs
        return peak is not None and (peak > 0.0 or (peak >= CLIP_PEAK_DBFS and self.flat_factor > 0.0))


def _num(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def decode_argv(path: Path, ffmpeg: FfmpegInfo, demuxer: str, max_seconds: float) -> list[str]:
    """The decode pass; ``-t`` stops reading after ``max_seconds`` whatever the header claimed."""
    return [
        ffmpeg.path, "-nostdin", "-hide_banner", "-nostats", "-loglevel", MEASURE_LOGLEVEL,
        "-t", f"{max_seconds:.6f}", *master_input(demuxer, path),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", FILTERS,
        "-c:a", MEASURE_CODEC,
        "-f", "null", "-",
    ]


def decode(path: Path, *, demuxer: str, ffmpeg: FfmpegInfo, timeout: float, max_seconds: float) -> Decoded:
    """Decode the first audio stream (at most ``max_seconds``); raises ``FfmpegError`` if ffmpeg fails."""
    text = run(decode_argv(path, ffmpeg, demuxer, max_seconds), timeout=timeout).stderr.decode(errors="replace")
    return parse_decode_log(text)


def parse_decode_log(text: str) -> Decoded:
    stats = {m.group("key"): m.group(2) for m in _ASTAT_RE.finditer(text)}
    # The last summary counts: with a complex filtergraph (the shared pass) ffmpeg configures the
    # graph once for probing and logs an empty ebur128 summary (-70 LUFS, -inf) for it first.
    i = _last(_I_RE, text)
    lra = _last(_LRA_RE, text)
    tp = _last(_TP_RE, text)
    integrated = _num(i.group(1)) if i else None
    if integrated is not None and integrated <= ABSOLUTE_GATE_LUFS:
        integrated = None
    errors = [_ADDR_RE.sub("", line).strip() for line in text.splitlines() if _PROBLEM_RE.search(line)]
    try:
        summary = parse_summary(text)
    except Exception:  # the summary is a nicety (bit depth); the measurements stand without it
        summary = None
    return Decoded(
        samples=int(float(stats.get("Number of samples", "0"))),
        integrated_lufs=integrated,
        loudness_range_lu=_num(lra.group(1)) if lra and integrated is not None else None,
        true_peak_dbtp=_num(tp.group(1)) if tp else None,
        sample_peak_dbfs=_num(stats["Peak level dB"]) if "Peak level dB" in stats else None,
        flat_factor=_num(stats.get("Flat factor", "0")) or 0.0,
        errors=errors,
        duration_estimated=_ESTIMATE in text,
        summary=summary,
    )
