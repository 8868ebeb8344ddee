"""The one sample-rate conversion of a master, with the best resampler we have.

SoX's resampler (libsoxr) at 28-bit precision is SoX's "very high quality"
setting: pass band flat to about 0.91 x Nyquist, stop band beyond the noise
floor of 24-bit audio.  An ffmpeg built without libsoxr falls back to
libswresample's own polyphase filter with a long filter (256 taps instead of
32), Kaiser beta 16 and a 0.97 cutoff, which brings its stop band below -120 dB.
Resampling runs in 32-bit float (``osf=fltp``): that is what the AAC and Opus
encoders take, its 24-bit mantissa carries a 24-bit master, and it keeps the
output reproducible: when libswresample picks an integer path (16-bit masters
on some builds), libsoxr dithers with a random seed and every run differs.
Whether libsoxr is usable is probed once per binary by running it, which is
the only test that cannot be fooled by a build listing an option it lacks.
"""

from __future__ import annotations

import functools
import subprocess

SOXR_OPTIONS: dict[str, object] = {"resampler": "soxr", "precision": 28}
SWR_OPTIONS: dict[str, object] = {
    "resampler": "swr",
    "filter_size": 256,
    "phase_shift": 14,
    "cutoff": 0.97,
    "kaiser_beta": 16,
}


@functools.lru_cache(maxsize=8)
def has_soxr(ffmpeg_path: str) -> bool:
    """True when this ffmpeg can run ``aresample=resampler=soxr``."""
    argv = [
        ffmpeg_path, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "0.05",
        "-af", "aresample=48000:resampler=soxr", "-f", "null", "-",
    ]
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def resample_options(ffmpeg_path: str, sample_rate: int, *, prefer: str | None = None) -> dict[str, object]:
    """``aresample`` options converting to ``sample_rate``; ``prefer`` forces "soxr" or "swr"."""
    use_soxr = has_soxr(ffmpeg_path) if prefer is None else prefer == "soxr"
    return {"osr": sample_rate, "osf": "fltp", **(SOXR_OPTIONS if use_soxr else SWR_OPTIONS)}
