"""The embedded demo master: generated, never downloaded.

About 20 s of music-like stereo audio at 44.1 kHz / 16-bit: a I-V-vi-IV
progression in C on a soft pad, a bass line, a pentatonic melody, kick,
snare and hi-hats from shaped noise, with fades at both ends.  It is
rendered with numpy, encoded to FLAC by ffmpeg in bit-exact mode, tagged
(title, artist, album, ISRC, track number) and given a PNG cover made here
with zlib and struct.  Every step is deterministic, so the file has the same
bytes on every run and re-ingesting it is a no-op.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tonearm.core.ffmpeg import locate, run

RATE = 44100
BPM = 120
BEAT = 60 / BPM
BARS = 10  # 4/4 at 120 bpm: 2 s a bar, 20 s in all
SECONDS = BARS * 4 * BEAT
FILENAME = "tonearm-demo.flac"
TAGS = {
    "title": "Groove in C (tonearm demo)",
    "artist": "tonearm",
    "album": "tonearm Demo Sessions",
    "isrc": "ZZTNA2600001",  # "ZZ" is not a country: an ISO 3166 user-assigned code, safe for a demo
    "tracknumber": "1",
}
# (root MIDI note, chord intervals) for C, G, Am, F
PROGRESSION = ((48, (0, 4, 7, 12)), (43, (0, 4, 7, 12)), (45, (0, 3, 7, 12)), (41, (0, 4, 7, 12)))
MELODY = (72, 74, 76, 79, 76, 74, 72, 69, 67, 69, 72, 74, 76, 74, 72, 72)  # C major pentatonic, eighth notes


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _env(n: int, attack: float, release: float) -> np.ndarray:
    t = np.arange(n) / RATE
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / release)


def _add(track: np.ndarray, start_s: float, sound: np.ndarray) -> None:
    i = int(round(start_s * RATE))
    j = min(len(track), i + len(sound))
    track[i:j] += sound[: j - i]


def render() -> np.ndarray:
    """Stereo float samples in [-1, 1], shape (n, 2)."""
    n = int(SECONDS * RATE)
    rng = np.random.default_rng(20260101)
    pad, bass, lead, drums_l, drums_r = (np.zeros(n) for _ in range(5))
    bar = 4 * BEAT
    for b in range(BARS):
        root, chord = PROGRESSION[b % len(PROGRESSION)]
        t = np.arange(int(bar * RATE)) / RATE
        shape = np.minimum(1.0, t / 0.3) * np.minimum(1.0, (bar - t) / 0.2)
        for k in chord:
            f = _hz(root + 12 + k)
            _add(pad, b * bar, 0.05 * shape * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)))
        for beat in range(4):  # bass: root, root, fifth, octave
            f = _hz(root + (0, 0, 7, 12)[beat])
            tt = np.arange(int(BEAT * RATE)) / RATE
            _add(bass, b * bar + beat * BEAT, 0.22 * _env(len(tt), 0.005, 0.25) * np.tanh(2 * np.sin(2 * np.pi * f * tt)))
        if b >= 2:  # the melody enters in bar 3
            for e in range(8):
                note = MELODY[(b * 8 + e) % len(MELODY)]
                tt = np.arange(int(BEAT / 2 * RATE)) / RATE
                f = _hz(note)
                vib = 0.003 * np.sin(2 * np.pi * 5 * tt)
                tone = np.sin(2 * np.pi * f * tt * (1 + vib)) + 0.25 * np.sin(6 * np.pi * f * tt)
                _add(lead, b * bar + e * BEAT / 2, 0.12 * _env(len(tt), 0.01, 0.18) * tone)
        for beat in range(4):
            start = b * bar + beat * BEAT
            if beat in (0, 2):  # kick: a falling sine
                tt = np.arange(int(0.25 * RATE)) / RATE
                phase = 2 * np.pi * (50 * tt + 60 * 0.05 * (1 - np.exp(-tt / 0.05)))
                kick = 0.5 * np.exp(-tt / 0.09) * np.sin(phase)
                _add(drums_l, start, kick)
                _add(drums_r, start, kick)
            else:  # snare: a noise burst with a body tone
                tt = np.arange(int(0.18 * RATE)) / RATE
                snare = 0.16 * np.exp(-tt / 0.05) * (rng.standard_normal(len(tt)) * 0.7 + np.sin(2 * np.pi * 190 * tt))
                _add(drums_l, start, snare)
                _add(drums_r, start, 0.9 * snare)
            for half in (0, 0.5):  # hi-hats: differenced noise is bright
                tt = np.arange(int(0.05 * RATE)) / RATE
                hat = 0.05 * np.exp(-tt / 0.012) * np.diff(rng.standard_normal(len(tt) + 1))
                _add(drums_r, start + half * BEAT, hat)
                _add(drums_l, start + half * BEAT, 0.5 * hat)
    left = pad + bass + 0.8 * lead + drums_l
    right = pad + bass + 1.0 * lead + drums_r
    mix = np.stack([left, right], axis=1)
    t = np.arange(n) / RATE
    fade = np.minimum(1.0, t / 1.0) * np.minimum(1.0, (SECONDS - t) / 2.0)
    mix *= fade[:, None]
    return mix * (10 ** (-1.0 / 20) / np.max(np.abs(mix)))  # peak at -1 dBFS


def cover_png(size: int = 64) -> bytes:
    """A small RGB PNG (a gradient with a record-like ring), built per RFC 2083."""
    y, x = np.mgrid[0:size, 0:size]
    r = np.hypot(x - size / 2 + 0.5, y - size / 2 + 0.5) / (size / 2)
    ring = ((r > 0.2) & (r < 0.95)).astype(np.uint8)
    red = (40 + 150 * x / size).astype(np.uint8) * ring + 230 * (1 - ring) * (r < 0.2)
    green = (30 + 60 * ring * ((r * 20).astype(int) % 2)).astype(np.uint8)
    blue = (120 + 100 * y / size).astype(np.uint8)
    rgb = np.stack([red, green, blue], axis=2).astype(np.uint8)
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(size))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _tag(path: Path) -> None:
    from mutagen.flac import FLAC, Picture

    audio = FLAC(path)
    audio.clear()
    for key, value in TAGS.items():
        audio[key] = value
    pic = Picture()
    pic.type = 3  # front cover
    pic.mime = "image/png"
    pic.desc = "cover"
    pic.width = pic.height = 64
    pic.depth = 24
    pic.data = cover_png()
    audio.clear_pictures()
    audio.add_picture(pic)
    audio.save(deleteid3=True)


def write_demo_master(folder: Path, cfg: Any = None) -> Path:
    """Write the demo FLAC into ``folder`` (unchanged if it is already there) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILENAME
    pcm = (np.clip(render(), -1, 1) * 32767).round().astype("<i2").tobytes()
    ffmpeg = locate(cfg.ffmpeg.path if cfg is not None else "")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".demo-", suffix=".flac")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        run([ffmpeg.path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "s16le", "-ar", str(RATE), "-ac", "2", "-i", "pipe:0",
             "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
             "-c:a", "flac", "-compression_level", "8", "-f", "flac", "file:" + str(tmp)],
            input=pcm, timeout=cfg.ffmpeg.timeout if cfg is not None else 600)
        _tag(tmp)
        if target.is_file() and target.read_bytes() == tmp.read_bytes():
            return target
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
