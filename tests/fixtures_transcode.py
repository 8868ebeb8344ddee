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
import pytest

from tonearm.ffmpeg import FfmpegInfo, locate
from tonearm.model import Loudness, MasterInfo, Tags


def _imageio_ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


BINARIES = {"system": lambda: shutil.which("ffmpeg") or "ffmpeg", "imageio": _imageio_ffmpeg}


@pytest.fixture(params=sorted(BINARIES), scope="session")
def ffmpeg_bin(request: pytest.FixtureRequest) -> FfmpegInfo:
    """Every transcode test runs against Debian's ffmpeg 5.1 and imageio-ffmpeg's 9.0."""
    return locate(BINARIES[request.param]())


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
