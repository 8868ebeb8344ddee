"""Generated test media for the ingest tests (ffmpeg lavfi + numpy; nothing stored in the repo).

The reference signal is a 997 Hz sine at -20 dBFS peak in every channel
except LFE.  ITU-R BS.1770-4 (section 2, note on calibration) fixes its
loudness independently of our code: a 0 dBFS 1 kHz sine in one front
channel reads -3.01 LKFS, so the same sine at -20 dBFS in both stereo
channels reads -20.0 LUFS, in one (mono) channel -23.0 LUFS; its true and
sample peaks are -20 dBFS.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REF_AMPLITUDE = 0.1  # -20 dBFS
REF_FREQ = 997
SINE = f"{REF_AMPLITUDE}*sin(2*PI*{REF_FREQ}*t)"
LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8}

# name -> (suffix, codec args). Lossless first.
FORMATS: dict[str, tuple[str, list[str]]] = {
    "wav": (".wav", ["-c:a", "pcm_s16le"]),
    "bwf": (".wav", ["-c:a", "pcm_s24le", "-write_bext", "1", "-metadata", "originator=tonearm tests"]),
    "flac": (".flac", ["-c:a", "flac"]),
    "aiff": (".aiff", ["-c:a", "pcm_s16be"]),
    "alac": (".m4a", ["-c:a", "alac"]),
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    "m4a": (".m4a", ["-c:a", "aac", "-b:a", "192k"]),
    "vorbis": (".ogg", ["-c:a", "libvorbis", "-q:a", "6"]),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "128k"]),
}
LOSSY = {"mp3", "m4a", "vorbis", "opus"}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; a failure shows its stderr in the test output."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=300)


def sine_source(*, rate: int = 48000, layout: str = "stereo", seconds: float = 4.0) -> list[str]:
    """lavfi input args for the reference sine in every channel (LFE silent)."""
    n = LAYOUT_CHANNELS[layout]
    exprs = [SINE] * n
    if n >= 6:
        exprs[3] = "0"  # LFE is excluded from BS.1770 loudness; keep it silent
    return ["-f", "lavfi", "-i", f"aevalsrc={'|'.join(exprs)}:s={rate}:c={layout}:d={seconds}"]


def make(folder: Path, name: str, fmt: str = "flac", *, rate: int = 48000, layout: str = "stereo",
         seconds: float = 4.0, extra: list[str] | None = None, source: list[str] | None = None) -> Path:
    suffix, codec = FORMATS[fmt]
    out = folder / (name if "." in name else name + suffix)
    ffmpeg(*(source or sine_source(rate=rate, layout=layout, seconds=seconds)), *(extra or []), *codec,
           "file:" + str(out))
    return out


def truncate(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def patch_wav_data_size(src: Path, dst: Path, factor: float) -> Path:
    """Copy a PCM WAV, rewriting the ``data`` chunk size to ``factor`` x the real one."""
    data = bytearray(src.read_bytes())
    at = data.index(b"data")
    real = int.from_bytes(data[at + 4: at + 8], "little")
    data[at + 4: at + 8] = (int(real * factor) & ~3).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst
