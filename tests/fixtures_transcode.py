"""Shared helpers for transcode and end-to-end tests: real masters made by
ffmpeg's own generators, their ``MasterInfo`` read back with ffprobe, decoding
to numpy, and a top-level MP4 box walker.  Import explicitly."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from tonearm.core.model import Loudness, MasterInfo, Tags


def _imageio_ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# The two ffmpeg builds every transcode test runs against (the ``ffmpeg_bin`` fixture in conftest.py).
BINARIES = {"system": lambda: shutil.which("ffmpeg") or "ffmpeg", "imageio": _imageio_ffmpeg}


def system_ffmpeg() -> str:
    return shutil.which("ffmpeg") or "ffmpeg"


def ffprobe_json(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return json.loads(out)


def make_master(
    path: Path,
    *,
    seconds: float = 3.0,
    rate: int = 44100,
    channels: int = 2,
    freqs: tuple[float, ...] | None = None,
    codec: str = "flac",
    sample_fmt: str = "s16",
    tags: dict[str, str] | None = None,
    artwork: bool = False,
) -> Path:
    """A master of ``channels`` sine tones (one frequency per channel), computed in double
    precision by ``aevalsrc`` so 24-bit masters really carry 24 bits."""
    freqs = freqs or tuple(440.0 * (1 + i * 0.25) for i in range(channels))
    assert len(freqs) == channels
    expr = "|".join(f"0.4*sin(2*PI*{f}*t)" for f in freqs)
    layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, f"{channels}c")
    argv = [system_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"aevalsrc={expr}:s={rate}:d={seconds}:c={layout}"]
    if artwork:
        argv += ["-f", "lavfi", "-i", "color=c=red:s=64x64:d=1", "-map", "0:a", "-map", "1:v",
                 "-frames:v", "1", "-c:v", "png", "-disposition:v", "attached_pic"]
    for k, v in (tags or {}).items():
        argv += ["-metadata", f"{k}={v}"]
    argv += ["-c:a", codec] + (["-sample_fmt", sample_fmt] if codec == "flac" else [])
    argv.append(str(path))
    subprocess.run(argv, check=True, timeout=600)
    return path


def master_info(path: Path) -> MasterInfo:
    """MasterInfo from ffprobe, independent of the ingest stage's own prober."""
    probe = ffprobe_json(path)
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    bits = int(audio.get("bits_per_raw_sample") or audio.get("bits_per_sample") or 0) or None
    duration = float(probe["format"]["duration"])
    return MasterInfo(
        asset_id="0" * 64,
        source_name=path.name,
        size=path.stat().st_size,
        container=probe["format"]["format_name"],
        demuxer=probe["format"]["format_name"].split(",")[0],  # "mov,mp4,..." -> "mov"
        codec=audio["codec_name"],
        sample_rate=int(audio["sample_rate"]),
        channels=int(audio["channels"]),
        channel_layout=audio.get("channel_layout"),
        bits_per_sample=bits,
        duration_s=duration,
        header_duration_s=duration,
        loudness=Loudness(integrated_lufs=None, loudness_range_lu=None, true_peak_dbtp=None),
        tags=Tags(),
        has_video=any(s["codec_type"] == "video" for s in probe["streams"]),
    )


def decode(path: Path | str, *, ffmpeg: str | None = None, channels: int | None = None) -> np.ndarray:
    """Decode any file or URL to float64 samples shaped (frames, channels)."""
    if channels is None:
        channels = int(next(s for s in ffprobe_json(Path(path))["streams"] if s["codec_type"] == "audio")["channels"])
    out = subprocess.run(
        [ffmpeg or system_ffmpeg(), "-v", "error", "-nostdin", "-i", str(path), "-f", "f64le", "-"],
        capture_output=True, check=True, timeout=600,
    ).stdout
    return np.frombuffer(out, np.float64).reshape(-1, channels)


def tone_level_db(x: np.ndarray, freq: float, rate: int = 48000) -> float:
    """Level of a sine at ``freq`` in ``x`` (one channel), dB re full-scale amplitude 1,
    by least squares against sin/cos over the middle of the signal."""
    n = len(x)
    t = np.arange(n) / rate
    mid = slice(n // 10, n - n // 10)
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)[mid]
    coef, *_ = np.linalg.lstsq(basis, x[mid], rcond=None)
    return 20 * np.log10(max(float(np.hypot(*coef)), 1e-12))


def sine_snr_db(x: np.ndarray, freq: float, rate: int = 48000) -> float:
    """Power of the best-fitting ``freq`` sine over everything else, in dB."""
    n = len(x)
    t = np.arange(n) / rate
    mid = slice(n // 10, n - n // 10)
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones(n)], 1)[mid]
    coef, *_ = np.linalg.lstsq(basis, x[mid], rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit**2) / np.sum((x[mid] - fit) ** 2)))


def top_level_boxes(path: Path) -> list[str]:
    """Types of the top-level ISOBMFF boxes (ISO/IEC 14496-12 4.2: size, type, [largesize])."""
    types = []
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        pos = 0
        while pos < end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = end - pos
            types.append(kind.decode("latin-1"))
            pos += size
    return types


def iter_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, offset, size, header_size) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"bad box size {size} at {pos}")
        yield kind.decode("latin-1"), pos, size, header
        pos += size


def default_sample_duration(init: bytes) -> int:
    """trex default_sample_duration from an init segment (ISO/IEC 14496-12 8.8.3), 0 if none."""
    for kind, pos, size, hdr in iter_boxes(init):
        if kind == "moov":
            for k2, p2, s2, h2 in iter_boxes(init, pos + hdr, pos + size):
                if k2 == "mvex":
                    for k3, p3, s3, h3 in iter_boxes(init, p2 + h2, p2 + s2):
                        if k3 == "trex":
                            return struct.unpack_from(">I", init, p3 + h3 + 12)[0]
    return 0


def fragment_durations(data: bytes, trex_default: int = 0) -> list[int]:
    """Total sample duration (ticks) of every moof in ``data``, read from tfhd/trun
    (ISO/IEC 14496-12 8.8.7, 8.8.8): the media says how long it is, not the manifest."""
    out = []
    for kind, pos, size, hdr in iter_boxes(data):
        if kind != "moof":
            continue
        total = 0
        for k2, p2, s2, h2 in iter_boxes(data, pos + hdr, pos + size):
            if k2 != "traf":
                continue
            default = trex_default
            for k3, p3, s3, h3 in iter_boxes(data, p2 + h2, p2 + s2):
                body = p3 + h3
                flags = struct.unpack_from(">I", data, body)[0] & 0xFFFFFF
                if k3 == "tfhd":
                    cur = body + 8  # version/flags, track_ID
                    cur += 8 if flags & 0x1 else 0
                    cur += 4 if flags & 0x2 else 0
                    if flags & 0x8:
                        default = struct.unpack_from(">I", data, cur)[0]
                elif k3 == "trun":
                    count = struct.unpack_from(">I", data, body + 4)[0]
                    cur = body + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                    per = 4 * bin(flags & 0xF00).count("1")
                    for _ in range(count):
                        total += struct.unpack_from(">I", data, cur)[0] if flags & 0x100 else default
                        cur += per
        out.append(total)
    return out


def parse_sidx(data: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """(timescale, first_offset, [(referenced_size, subsegment_duration)]) of a sidx box
    (ISO/IEC 14496-12 8.16.3); ``data`` starts at the box."""
    size, kind = struct.unpack_from(">I4s", data, 0)
    assert kind == b"sidx", kind
    version = data[8]
    timescale = struct.unpack_from(">I", data, 16)[0]
    if version == 0:
        _ept, first_offset = struct.unpack_from(">II", data, 20)
        cur = 28
    else:
        _ept, first_offset = struct.unpack_from(">QQ", data, 20)
        cur = 36
    count = struct.unpack_from(">H", data, cur + 2)[0]
    cur += 4
    refs = []
    for _ in range(count):
        word, duration, _sap = struct.unpack_from(">III", data, cur)
        assert not word >> 31, "hierarchical sidx not expected"
        refs.append((word & 0x7FFFFFFF, duration))
        cur += 12
    return timescale, first_offset, refs
