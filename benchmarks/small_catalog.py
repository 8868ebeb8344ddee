"""The small-catalog case and the per-master overhead breakdown, beside the large catalog.

Labels deliver singles and EPs as often as albums.  A 20-master catalog hides per-master
costs (start-up, probing, packaging) and the idle core at the end of a batch; four masters of
two to three minutes show them.  The small catalog is ingested the way a user would: ``tonearm
ingest`` with its default ``--jobs``; its floor is measured in the same run, the same way as the
large one's (``benchmarks.pipeline.floor``).  The breakdown times one 2-minute master's job
span by span (``benchmarks.overhead``).
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks import catalog, overhead, pipeline
from benchmarks.catalog import MasterSpec
from benchmarks.harness import Bench, busy_fraction, load_average
from tonearm.core.config import Config
from tonearm.core.ffmpeg import FfmpegInfo

SMALL_TARGET = 1.15
LARGE_TARGET = 1.10
# (container, rate, channels, sample format, seconds): 44.1/48/96 kHz, stereo and mono, 2-2.7 minutes.
SMALL: tuple[tuple[str, int, int, str, float], ...] = (
    ("flac", 44100, 2, "s16", 160.0),
    ("wav", 48000, 1, "s16", 150.0),
    ("flac", 96000, 2, "s32", 140.0),
    ("flac", 44100, 1, "s16", 125.0),
)
QUICK_SECONDS = 8.0


def small_specs(*, quick: bool) -> list[MasterSpec]:
    specs = []
    for i, (container, rate, channels, fmt, seconds) in enumerate(SMALL[:2] if quick else SMALL):
        seconds = QUICK_SECONDS if quick else seconds
        name = f"small-{i:02d}-{rate // 100 / 10:g}k-{channels}ch-{seconds:g}s-{fmt}.{container}"
        specs.append(MasterSpec(name=name, seed=1000 + i, seconds=seconds, container=container, sample_rate=rate,
                                channels=channels, sample_fmt=fmt))
    return specs


def bench_small(b: Bench, cfg: Config, ff: FfmpegInfo) -> None:
    """Floor and ``tonearm ingest`` (default jobs) for the small catalog, in this run."""
    cores = os.cpu_count() or 1
    specs = small_specs(quick=b.args.quick)
    masters = [pipeline.Master(sp, catalog.write_master(sp, b.work / "masters", ffmpeg=ff.path)) for sp in specs]
    audio_s = sum(sp.seconds for sp in specs)
    load_before, busy = load_average(), busy_fraction()
    fl = pipeline.floor(masters, cfg, ff, b.work / "floor-small", cores=cores)
    tn = pipeline.tonearm_ingest(masters, ff, b.work / "data-small", jobs=None, cores=cores)
    print(f"bench: small catalog floor {fl['floor_wall_s']:.1f} s, tonearm ingest {tn['wall_s']:.1f} s", flush=True)
    b.results["pipeline_small"] = {
        "masters": [{"name": m.spec.name, "seconds": m.spec.seconds, "sample_rate": m.spec.sample_rate,
                     "channels": m.spec.channels, "container": m.spec.container} for m in masters],
        "audio_seconds": audio_s, "floor": fl, "tonearm": tn, "load_before": load_before, "busy_before": busy,
        "load_after": load_average(),
    }
    ratio = tn["wall_s"] / fl["floor_wall_s"]
    b.fig("pipeline", f"small catalog ({len(masters)} masters): tonearm wall time / encoder floor", ratio, "x",
          f"<= {SMALL_TARGET:.2f}", ratio <= SMALL_TARGET,
          baseline=f"floor {fl['floor_wall_s']:.1f} s = {fl['encode_cpu_s']:.1f} encoder CPU s / {cores} cores",
          note=f"tonearm ingest (default jobs) {tn['wall_s']:.1f} s, {audio_s / 60:.1f} min of audio, "
               "44.1/48/96 kHz, stereo and mono")
    overhead_cpu = tn["cpu_s"] / fl["encode_cpu_s"]
    b.fig("pipeline", "small catalog: tonearm CPU seconds / encoder-only CPU seconds", overhead_cpu, "x", "report",
          None, baseline=f"{fl['encode_cpu_s']:.1f} s in the encoders alone",
          note=f"{tn['cpu_s']:.1f} CPU s of all children; utilisation {tn['cpu_utilisation'] * 100:.0f}%")


def bench_overhead(b: Bench, ff: FfmpegInfo) -> None:
    """The fixed costs of one 2-minute master's job, span by span (``benchmarks.overhead``)."""
    seconds = QUICK_SECONDS if b.args.quick else 120.0
    spec = MasterSpec(name=f"overhead-44.1k-2ch-{seconds:g}s-s16.flac", seed=99, seconds=seconds, container="flac",
                      sample_rate=44100, channels=2, sample_fmt="s16")
    master = catalog.write_master(spec, b.work / "masters", ffmpeg=ff.path)
    res: dict[str, Any] = overhead.measure(master, b.work / "overhead")
    b.results["overhead"] = res
    job = res["spans"]["job_s"]
    enc = res["spans"]["spans_s"].get("ffmpeg run: decode + measure + encode", 0.0)
    b.fig("overhead", f"fixed cost of one {seconds:g} s master (job wall - its ffmpeg run)", res["fixed_s"], "s",
          "report", None, baseline=f"job {job:.2f} s, of which the ffmpeg run {enc:.2f} s",
          note=f"{res['fixed_s'] / job * 100:.1f}% of the job")
    for label, value in sorted(res["spans"]["spans_s"].items(), key=lambda kv: -kv[1]):
        if label.startswith("ffmpeg run"):
            continue
        b.fig("overhead", f"span: {label}", value, "s", "report", None, note=f"{value / job * 100:.1f}% of the job")
    b.fig("overhead", "span: other (Python between the spans)", res["other_s"], "s", "report", None)
    st = res["startup"]
    b.fig("overhead", "start-up: `tonearm` command imports", st["cli_import_wall_s"], "s", "report", None,
          note=f"{st['cli_import_cpu_s']:.2f} CPU s; once per tonearm ingest")
    b.fig("overhead", "start-up: batch worker imports", st["worker_import_wall_s"], "s", "report", None,
          note=f"{st['worker_import_cpu_s']:.2f} CPU s; once per worker process")
    top = res["profile"][:3]
    if top:
        b.fig("overhead", "cProfile: costliest Python function (own time)", top[0]["own_s"], "s", "report", None,
              note="; ".join(f"{r['function']} {r['own_s']:.3f} s" for r in top))
