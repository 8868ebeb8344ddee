"""Pipeline throughput: tonearm against the encoder floor and a naive baseline.

All three use the same ffmpeg binary (``tonearm.core.ffmpeg.locate()``) and the
same ladder, in the same run:

* floor: each master is decoded once to 48 kHz float PCM (not timed), then
  one ffmpeg per rung encodes that PCM; the CPU seconds of those encodes,
  summed and divided by the cores, is the least wall time any pipeline on
  this machine can take.
* naive: one ffmpeg per rung per master, one after another, each decoding,
  resampling and encoding the master itself (tonearm's own command for a
  one-rung ladder, so the work per rung is identical).
* tonearm: ``tonearm ingest --jobs N`` from an empty data directory to
  published assets.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgspec.structs import replace  # the config types are msgspec structs

from benchmarks.catalog import MasterSpec
from benchmarks.procs import run_timed
from tonearm.core.codecs import codec
from tonearm.core.config import Config
from tonearm.core.ffmpeg import FfmpegInfo
from tonearm.core.model import Loudness, MasterInfo, Rung
from transcode import build_command
from transcode.channels import target_channels

TIMEOUT = 1800.0


@dataclass(frozen=True)
class Master:
    spec: MasterSpec
    path: Path


def _info(m: Master) -> MasterInfo:
    """What ingest would report, from the spec that made the file."""
    s = m.spec
    return MasterInfo(
        asset_id="0" * 64, source_name=m.path.name, size=m.path.stat().st_size, container=s.container, demuxer=s.container,
        codec="flac" if s.container == "flac" else "pcm", sample_rate=s.sample_rate, channels=s.channels,
        channel_layout=None, bits_per_sample=24 if s.sample_fmt == "s32" else 16, duration_s=s.seconds,
        header_duration_s=s.seconds, loudness=Loudness(integrated_lufs=None, loudness_range_lu=None,
                                                       true_peak_dbtp=None),
    )


def _floor_encode_argv(ffmpeg: str, pcm: Path, rung: Rung, out: Path) -> list[str]:
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y", "-i", str(pcm),
            "-map", "0:a", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
            "-c:a", codec(rung.codec).encoder]
    if rung.codec == "flac":
        argv += ["-f_strict", "experimental"]
    else:
        argv += ["-b:a", str(rung.bitrate)]
    return argv + ["-f", "mp4", str(out)]


def floor(masters: list[Master], cfg: Config, ff: FfmpegInfo, work: Path, *, cores: int) -> dict[str, Any]:
    """CPU seconds of the encoders alone, per rung, from already-decoded PCM."""
    work.mkdir(parents=True, exist_ok=True)
    rungs = cfg.ladder.all_rungs
    per_rung: dict[str, float] = {r.name: 0.0 for r in rungs}
    decode_cpu = 0.0

    def one_master(m: Master) -> list[tuple[str, float]]:
        nonlocal decode_cpu
        pcm = work / f"{m.path.stem}.pcm.wav"
        decoded = run_timed([ff.path, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(m.path),
                             "-ar", str(cfg.ladder.sample_rate), "-c:a", "pcm_f32le", str(pcm)], timeout=TIMEOUT)
        decode_cpu += decoded.cpu_s
        out = []
        try:
            for rung in rungs:
                if target_channels(rung, m.spec.channels) != m.spec.channels:
                    raise ValueError(f"{rung.name}: the floor assumes the rung keeps the master's channels")
                dst = work / f"{m.path.stem}.{rung.name}.mp4"
                t = run_timed(_floor_encode_argv(ff.path, pcm, rung, dst), timeout=TIMEOUT)
                dst.unlink(missing_ok=True)
                out.append((rung.name, t.cpu_s))
        finally:
            pcm.unlink(missing_ok=True)
        return out

    # Masters in parallel, one per core, only to save wall time: the figure is CPU time.
    with ThreadPoolExecutor(max_workers=cores) as pool:
        for result in pool.map(one_master, masters):
            for name, cpu in result:
                per_rung[name] += cpu
    total = sum(per_rung.values())
    return {"encode_cpu_s": total, "per_rung_cpu_s": per_rung, "decode_cpu_s_untimed": decode_cpu,
            "floor_wall_s": total / cores, "cores": cores}


def naive(masters: list[Master], cfg: Config, ff: FfmpegInfo, work: Path) -> dict[str, Any]:
    """One ffmpeg per rung per master, run one after another."""
    work.mkdir(parents=True, exist_ok=True)
    wall = cpu = 0.0
    runs = 0
    for m in masters:
        for rung in cfg.ladder.all_rungs:
            ladder = replace(cfg.ladder, rungs=(rung,), lossless=False)
            argv, outputs = build_command(m.path, _info(m), ladder, work, ffmpeg=ff)
            t = run_timed(argv, timeout=TIMEOUT)
            wall += t.wall_s
            cpu += t.cpu_s
            runs += 1
            for o in outputs:
                o.path.unlink(missing_ok=True)
    return {"wall_s": wall, "cpu_s": cpu, "processes": runs}


def tonearm_ingest(masters: list[Master], ff: FfmpegInfo, data: Path, *, jobs: int | None,
                   cores: int) -> dict[str, Any]:
    """``tonearm ingest --jobs N`` of every master, from an empty data directory (``jobs=None``: its default)."""
    shutil.rmtree(data, ignore_errors=True)
    env = {**os.environ, "TONEARM_FFMPEG": ff.path}
    argv = [sys.executable, "-m", "tonearm.app.cli", "--data", str(data), "ingest", "--json",
            *(["--jobs", str(jobs)] if jobs is not None else []), *(str(m.path) for m in masters)]
    t = run_timed(argv, timeout=TIMEOUT, env=env, check=False)
    results = [json.loads(line) for line in t.stdout.splitlines() if line.startswith("{")]
    published = [r for r in results if r["outcome"] == "published"]
    if t.returncode != 0 or len(published) != len(masters):
        failed = [f"{r['source']}: {r['error']}" for r in results if r["outcome"] != "published"]
        raise RuntimeError(f"tonearm ingest exited {t.returncode}; published {len(published)}/{len(masters)}; "
                           f"{failed[:3]} {t.stderr[-2000:]}")
    return {
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "cpu_utilisation": t.cpu_s / (t.wall_s * cores),
        "jobs": jobs if jobs is not None else "default",
        "assets": [r["asset_id"] for r in published],
        "job_seconds": [r["seconds"] for r in published],
    }
