"""A deterministic, music-like catalog of masters, synthesised cheaply.

Silence or a pure tone would flatter the encoders (AAC spends little on
them), so every master is a little song: a chord progression of harmonic
tones with decaying envelopes, a bass line, a melody and noise hi-hats, at a
tempo, key, length and format picked from a seeded generator.  The same
``count`` and seed always give the same bytes, so runs compare like for like.
Formats vary the way real deliveries do: FLAC 16/24-bit and WAV, mono and
stereo, 44.1, 48 and 96 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tonearm.core.ffmpeg import run

# (container, sample rate, channels, sample format written)
FORMATS: tuple[tuple[str, int, int, str], ...] = (
    ("flac", 44100, 2, "s16"),
    ("flac", 48000, 2, "s32"),  # 24-bit FLAC
    ("wav", 44100, 2, "s16"),
    ("flac", 96000, 2, "s32"),
    ("flac", 44100, 1, "s16"),
    ("wav", 48000, 1, "s16"),
    ("flac", 48000, 2, "s16"),
    ("wav", 96000, 2, "s32"),  # 24-bit WAV
)
_PROGRESSION = ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14))  # I vi IV V


@dataclass(frozen=True, kw_only=True)
class MasterSpec:
    name: str
    seed: int
    seconds: float
    container: str
    sample_rate: int
    channels: int
    sample_fmt: str


def plan(count: int, *, min_seconds: float, max_seconds: float, seed: int = 7) -> list[MasterSpec]:
    """The catalog's masters: formats cycle, lengths spread evenly over [min, max]."""
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(count):
        container, rate, channels, fmt = FORMATS[i % len(FORMATS)]
        frac = 0.5 if count == 1 else i / (count - 1)
        seconds = round(min_seconds + (max_seconds - min_seconds) * frac, 2)
        name = f"bench-{i:02d}-{rate // 100 / 10:g}k-{channels}ch-{seconds:g}s-{fmt}.{container}"  # a cache key
        specs.append(MasterSpec(name=name,
                                seed=int(rng.integers(1 << 30)), seconds=seconds, container=container,
                                sample_rate=rate, channels=channels, sample_fmt=fmt))
    return specs


def synthesize(spec: MasterSpec) -> np.ndarray:
    """float32 samples, shape (frames, channels), peak about -3 dBFS."""
    rng = np.random.default_rng(spec.seed)
    sr = spec.sample_rate
    bpm = float(rng.uniform(84, 140))
    beat = int(sr * 60 / bpm)
    root = 110.0 * 2 ** (int(rng.integers(0, 12)) / 12)
    total = int(spec.seconds * sr)
    out = np.zeros((total, 2), dtype=np.float32)
    t = np.arange(beat, dtype=np.float32) / sr
    decay = np.exp(-t * 3.0).astype(np.float32)
    hat = (rng.standard_normal(beat).astype(np.float32) * np.exp(-t * 60.0)).astype(np.float32)
    scale = (0, 2, 4, 7, 9, 12, 14, 16)
    pos = 0
    n = 0
    while pos < total:
        chord = _PROGRESSION[(n // 4) % len(_PROGRESSION)]
        tone = np.zeros(beat, dtype=np.float32)
        for semis in chord:
            f = root * 2 ** (semis / 12)
            for h in (1, 2, 3):
                tone += np.sin(2 * np.pi * f * h * t) / (h * 1.6)
        bass = np.sin(2 * np.pi * root / 2 * 2 ** (chord[0] / 12) * t) * 0.9
        mel_f = root * 2 * 2 ** (scale[int(rng.integers(0, len(scale)))] / 12)
        melody = (np.sin(2 * np.pi * mel_f * t) + 0.3 * np.sin(2 * np.pi * 2 * mel_f * t)) * 0.6
        pan = float(rng.uniform(0.3, 0.7))
        left = (tone * 0.18 + melody * pan) * decay + bass * 0.35 * decay ** 0.5 + hat * 0.25
        right = (tone * 0.18 + melody * (1 - pan)) * decay + bass * 0.35 * decay ** 0.5 + hat * 0.2
        end = min(total, pos + beat)
        out[pos:end, 0] = left[: end - pos]
        out[pos:end, 1] = right[: end - pos]
        pos = end
        n += 1
    out *= 0.7 / max(1e-9, float(np.abs(out).max()))
    if spec.channels == 1:
        return out.mean(axis=1, keepdims=True)
    return out


def write_master(spec: MasterSpec, folder: Path, *, ffmpeg: str) -> Path:
    """Encode the synthesised samples into the spec's container with real ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.name
    if path.exists():
        return path
    samples = synthesize(spec)
    codec = {"flac": "flac", "wav": "pcm_s24le" if spec.sample_fmt == "s32" else "pcm_s16le"}[spec.container]
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "f32le", "-ar", str(spec.sample_rate), "-ac", str(spec.channels), "-i", "pipe:0",
        "-c:a", codec,
    ]
    if spec.container == "flac":
        argv += ["-sample_fmt", spec.sample_fmt]
        if spec.sample_fmt == "s32":
            argv += ["-bits_per_raw_sample", "24"]
    argv += ["-metadata", f"title=Bench {spec.name}", "-metadata", "artist=tonearm benchmarks",
             str(path.with_suffix(".tmp" + path.suffix))]
    argv[-1:] = ["-f", spec.container, argv[-1]]
    run(argv, timeout=600, input=samples.tobytes())
    path.with_suffix(".tmp" + path.suffix).rename(path)
    return path
