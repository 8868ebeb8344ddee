"""Helpers for packager and manifests tests: encoder-like MP4s made by ffmpeg
directly (one plain MP4 per rung, 48 kHz, as transcode writes them), an
independent box walker (pymp4, not our own reader), and ffprobe/PyAV readers.
Import explicitly; the ``pk`` fixture
(each test master packaged once per session) is in conftest.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from pymp4.parser import Box as P4Box

from manifests import write_manifests
from packager import package
from tonearm.core.config import LadderConfig
from tonearm.core.model import EncodedRendition, Loudness, MasterInfo, PackagedRendition, Rung

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"
LAYOUT_NAMES = {1: "mono", 2: "stereo", 6: "5.1"}

# The ladder shape used throughout: three AAC rates, Opus, and lossless.
RUNGS = (
    Rung(name="aac_256k", codec="aac", bitrate=256_000),
    Rung(name="aac_128k", codec="aac", bitrate=128_000),
    Rung(name="aac_64k", codec="aac", bitrate=64_000),
    Rung(name="opus_96k", codec="opus", bitrate=96_000),
    Rung(name="flac", codec="flac", bitrate=None),
)


def encode(path: Path, rung: Rung, *, seconds: float, channels: int = 2, ffmpeg: str = FFMPEG) -> Path:
    """An MP4 like transcode's: music-like test signal (tones + noise bursts, so bit rates vary)."""
    layout = LAYOUT_NAMES[channels]
    expr = "|".join(
        f"0.3*sin(2*PI*{220 * (i + 2)}*t)*(0.6+0.4*sin(2*PI*0.3*t))+0.05*(random(0)-0.5)*gte(mod(t\\,4)\\,2)"
        for i in range(channels)
    )
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"aevalsrc={expr}:s=48000:d={seconds}:c={layout}", "-ar", "48000"]
    if rung.codec == "aac":
        argv += ["-c:a", "aac", "-b:a", str(rung.bitrate)]
    elif rung.codec == "opus":
        argv += ["-c:a", "libopus", "-b:a", str(rung.bitrate)]
    else:
        argv += ["-c:a", "flac", "-sample_fmt", "s16", "-strict", "-2"]
    argv.append(str(path))
    subprocess.run(argv, check=True, timeout=120)
    return path


def encode_ladder(folder: Path, *, seconds: float, channels: int = 2, rungs=RUNGS,
                  ffmpeg: str = FFMPEG) -> list[EncodedRendition]:
    folder.mkdir(parents=True, exist_ok=True)
    return [EncodedRendition(rung=r, path=encode(folder / f"{r.name}.mp4", r, seconds=seconds, channels=channels,
                                                 ffmpeg=ffmpeg), channels=channels) for r in rungs]


def master_info(seconds: float, channels: int = 2) -> MasterInfo:
    return MasterInfo(
        asset_id="0" * 64, source_name="generated.flac", size=1, container="flac", demuxer="flac", codec="flac",
        sample_rate=48000, channels=channels, channel_layout=LAYOUT_NAMES[channels], bits_per_sample=16,
        duration_s=seconds, header_duration_s=seconds,
        loudness=Loudness(integrated_lufs=-20.0, loudness_range_lu=1.0, true_peak_dbtp=-3.0),
    )


@dataclass
class Packaged:
    """One master packaged in both layouts, with manifests written."""

    seconds: float
    channels: int
    encoded: list[EncodedRendition]
    out: Path
    layouts: dict[str, list[PackagedRendition]]
    manifests: dict[str, str]
    events: list

    def rendition(self, layout: str, name: str) -> PackagedRendition:
        return next(p for p in self.layouts[layout] if p.rung.name == name)


def package_master(root: Path, *, seconds: float, channels: int = 2, rungs=RUNGS, ffmpeg: str = FFMPEG,
                   ladder: LadderConfig | None = None) -> Packaged:
    encoded = encode_ladder(root / "encode", seconds=seconds, channels=channels, rungs=rungs, ffmpeg=ffmpeg)
    out = root / "out"
    ladder = ladder or LadderConfig()
    events: list = []
    layouts = {lay: package(encoded, ladder, out, layout=lay, listener=events.append)
               for lay in ("segmented", "single")}
    manifests = write_manifests(out, layouts, master_info(seconds, channels))
    return Packaged(seconds, channels, encoded, out, layouts, manifests, events)


# ---- independent readers ---------------------------------------------------------------

def p4_boxes(data: bytes) -> list:
    """Top-level boxes parsed by pymp4 (construct-based), each with .offset and .end."""
    boxes, pos = [], 0
    while pos < len(data):
        b = P4Box.parse(data[pos:])
        b.offset, b.end = pos, pos + b.end
        boxes.append(b)
        pos = b.end
    return boxes


def p4_find(box, *path: bytes):
    for name in path:
        box = next(c for c in box.children if c.type == name)
    return box


def fragments(data: bytes) -> list[dict]:
    """Each moof+mdat pair: byte offset/size, tfdt, sample durations and sizes (pymp4's view)."""
    out = []
    boxes = p4_boxes(data)
    for i, b in enumerate(boxes):
        if b.type != b"moof":
            continue
        mdat = boxes[i + 1]
        assert mdat.type == b"mdat"
        traf = p4_find(b, b"traf")
        tfhd = p4_find(traf, b"tfhd")
        tfdt = p4_find(traf, b"tfdt")
        trun = p4_find(traf, b"trun")
        durs = [s.sample_duration if s.sample_duration is not None else tfhd.default_sample_duration
                for s in trun.sample_info]
        sizes = [s.sample_size for s in trun.sample_info]
        out.append({"offset": b.offset, "size": mdat.end - b.offset, "tfdt": tfdt.baseMediaDecodeTime,
                    "tfdt_version": tfdt.version, "durations": durs, "sizes": sizes, "sequence":
                    p4_find(b, b"mfhd").sequence_number, "data_offset": trun.data_offset,
                    "moof_size": b.end - b.offset, "mdat_size": mdat.end - mdat.offset,
                    "base_is_moof": tfhd.flags.default_base_is_moof})
    return out


def elst_entries(init: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(movie timescale, [(segment_duration, media_time)]) from the init segment.

    pymp4 has no edts/elst parser: the raw payload is decoded here from ISO/IEC
    14496-12 8.6.6.2 directly (version 0 or 1).
    """
    moov = next(b for b in p4_boxes(init) if b.type == b"moov")
    timescale = p4_find(moov, b"mvhd").timescale
    edts = p4_find(moov, b"trak", b"edts")  # pymp4 keeps edts raw: its payload is the elst box
    assert bytes(edts.data[4:8]) == b"elst"
    raw = bytes(edts.data[8:])
    version, count = raw[0], int.from_bytes(raw[4:8], "big")
    entries, pos = [], 8
    for _ in range(count):
        if version == 1:
            dur, mt = int.from_bytes(raw[pos:pos + 8], "big"), int.from_bytes(raw[pos + 8:pos + 16], "big", signed=True)
            pos += 20
        else:
            dur, mt = int.from_bytes(raw[pos:pos + 4], "big"), int.from_bytes(raw[pos + 4:pos + 8], "big", signed=True)
            pos += 12
        entries.append((dur, mt))
    return timescale, entries


def ffprobe(path: Path, *args: str) -> dict:
    out = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", *args, str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)


def packets(path: Path) -> list[dict]:
    return ffprobe(path, "-select_streams", "a:0", "-show_packets")["packets"]


def decode(path: Path, *ffargs: str) -> tuple[np.ndarray, str]:
    """PCM (float32, interleaved) decoded by the ffmpeg CLI, and its stderr (errors are reported there)."""
    proc = subprocess.run([FFMPEG, "-v", "error", *ffargs, "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return np.frombuffer(proc.stdout, dtype="<f4"), proc.stderr.decode(errors="replace")


def pyav_frames(path: Path) -> int:
    """Samples per channel decoded by PyAV (libav* through a different front end)."""
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            n += frame.samples
    return n


# ---- the test masters ------------------------------------------------------------------
# Every packager/manifests test looks at these (seconds, channels), each packaged once per session by
# the ``pk`` fixture in conftest.py: shorter than one segment, exactly one segment, a few segments;
# mono and 5.1 (on SMALL_RUNGS).
STEREO_LENGTHS = (0.5, 6.4, 14.0)
SMALL_RUNGS = (RUNGS[1], RUNGS[3], RUNGS[4])  # aac_128k, opus_96k, flac
MASTER_IDS = [f"{s}s-stereo" for s in STEREO_LENGTHS] + ["3.0s-mono", "3.0s-5.1"]
MASTER_KEYS = [(s, 2) for s in STEREO_LENGTHS] + [(3.0, 1), (3.0, 6)]


def segment_files(pk: Packaged, name: str) -> list[Path]:
    """Media segments of one rung as found on disk (not from our own records)."""
    return sorted((pk.out / name).glob("seg-*.m4s"))


def concatenated(pk: Packaged, name: str, dest: Path) -> Path:
    """init + every segment, byte for byte, as a client appends them."""
    dest.write_bytes((pk.out / name / "init.mp4").read_bytes()
                     + b"".join(f.read_bytes() for f in segment_files(pk, name)))
    return dest


def source(pk: Packaged, name: str) -> Path:
    return next(e.path for e in pk.encoded if e.rung.name == name)


def measured_media(pk: Packaged, layout: str, name: str) -> list[tuple[int, int, int]]:
    """(byte offset, bytes, ticks) of each media segment, read from the files on disk with pymp4."""
    if layout == "segmented":
        out = []
        for path in segment_files(pk, name):
            (frag,) = fragments(path.read_bytes())
            out.append((0, path.stat().st_size, sum(frag["durations"])))
        return out
    data = (pk.out / "single" / f"{name}.mp4").read_bytes()
    return [(f["offset"], f["size"], sum(f["durations"])) for f in fragments(data)]


# ---- bit rates, recomputed exactly (Fractions) from segment sizes and durations -------------------
# The manifests declare each figure rounded up to whole bits/s, so a test recomputing it from the same
# bytes expects ``math.ceil`` of these, exactly: no tolerance.


def average_rate(sizes: Sequence[int], ticks: Sequence[int], timescale: int) -> Fraction:
    """RFC 8216 4.3.4.2 AVERAGE-BANDWIDTH: every media segment's bits over the whole duration."""
    return Fraction(8 * sum(sizes) * timescale, sum(ticks))


def rfc8216_peak(sizes: Sequence[int], ticks: Sequence[int], timescale: int, target: int) -> Fraction:
    """RFC 8216 4.1 peak segment bit rate over runs of consecutive segments lasting 0.5-1.5 x the target
    duration; if no run fits (a presentation shorter than half a target duration), the whole presentation,
    which is all a client can fetch (the rule tonearm documents)."""
    best = None
    for i in range(len(sizes)):
        size = dur = 0
        for j in range(i, len(sizes)):
            size, dur = size + sizes[j], dur + ticks[j]
            seconds = Fraction(dur, timescale)
            if seconds > Fraction(3 * target, 2):
                break
            if seconds >= Fraction(target, 2):
                rate = 8 * size / seconds
                best = rate if best is None else max(best, rate)
    return best if best is not None else average_rate(sizes, ticks, timescale)


def dash_rate(sizes: Sequence[int], ticks: Sequence[int], timescale: int, min_buffer: Fraction) -> Fraction:
    """ISO/IEC 23009-1 5.3.5.2 @bandwidth: the smallest rate at which a client starting at any segment,
    playing after ``min_buffer`` seconds, has each segment whole before it plays:
    max over i <= j of bits(i..j) / (min_buffer + start_j - start_i)."""
    starts = [sum(ticks[:i]) for i in range(len(ticks))]
    best = Fraction(0)
    for i in range(len(sizes)):
        size = 0
        for j in range(i, len(sizes)):
            size += sizes[j]
            best = max(best, 8 * size / (min_buffer + Fraction(starts[j] - starts[i], timescale)))
    return best
