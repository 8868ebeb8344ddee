"""What every benchmark section shares: the run's scale, its figures, machine facts, the published tree."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import m3u8

from benchmarks import catalog, pipeline
from benchmarks.wrk import write_paths
from tonearm.core.config import load
from tonearm.core.ffmpeg import locate

HERE = Path(__file__).resolve().parent
SECTIONS = ("pipeline", "small", "origin", "memory", "edge", "spike", "protection")


@dataclass(frozen=True, kw_only=True)
class Scale:
    masters: int = 20
    min_seconds: float = 180.0
    max_seconds: float = 240.0
    wrk_seconds: float = 8.0
    connections: tuple[int, ...] = (64, 512)
    origin_workers: tuple[int, ...] = (1, 2)
    memory_requests: int = 100_000
    memory_warmup: int = 10_000
    hot_listeners: int = 500
    spike_from: int = 10
    spike_to: int = 1000
    spike_ramp_s: float = 3.0
    spike_hold_s: float = 3.0
    spike_segments: int = 15
    spike_pace_s: float = 1.0  # after 3 buffered segments, one per second: 6.4x real time


QUICK = Scale(masters=2, min_seconds=8.0, max_seconds=10.0, wrk_seconds=1.0, connections=(8, 32), origin_workers=(1,),
              memory_requests=3000, memory_warmup=500, hot_listeners=20, spike_from=2, spike_to=30,
              spike_ramp_s=0.5, spike_hold_s=0.5, spike_segments=2, spike_pace_s=0.1)


@dataclass
class Figure:
    """One reported number with its target; ``ok`` is None for figures reported without a target."""

    section: str
    name: str
    value: float
    unit: str
    target: str
    ok: bool | None
    baseline: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Bench:
    args: argparse.Namespace
    scale: Scale
    work: Path
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    charts: dict[str, str] = field(default_factory=dict)

    def fig(self, section: str, name: str, value: float, unit: str, target: str, ok: bool | None, **kw: str) -> None:
        self.figures.append(Figure(section, name, value, unit, target, ok, **kw))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all cores busy over a short pause while this benchmark runs nothing (other users' load)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


class Steal:
    """Share of CPU time the hypervisor gave to other guests (``steal`` in /proc/stat) while a block ran.

    On a shared host this is what makes absolute rates drift between runs;
    the report shows it beside the figures it may have disturbed.
    """

    def __enter__(self) -> "Steal":
        self._start = _cpu_fields()
        self.fraction = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_fields()
        delta = [b - a for a, b in zip(self._start, end)]
        self.fraction = round(delta[7] / max(1, sum(delta)), 3) if len(delta) > 7 else 0.0


def _cpu_fields() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def tool_version(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
        return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE.parent, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


# -- published tree and URL lists ----------------------------------------------------------------------------

def published_tree(b: Bench) -> Path:
    """The data dir the pipeline section published (or a small one made now)."""
    data = b.work / "data"
    pub = data / "published"
    if not pub.is_dir() or not any(pub.glob("*/asset.json")):
        cfg = load(env={})
        ff = locate(cfg.ffmpeg.path)
        specs = catalog.plan(min(b.scale.masters, 4), min_seconds=b.scale.min_seconds, max_seconds=b.scale.max_seconds)
        masters = [pipeline.Master(sp, catalog.write_master(sp, b.work / "masters", ffmpeg=ff.path)) for sp in specs]
        pipeline.tonearm_ingest(masters, ff, data, jobs=os.cpu_count() or 1, cores=os.cpu_count() or 1)
    return data


def url_lists(data: Path, lists: Path) -> dict[str, Path]:
    """wrk path lists over every published asset: segments, byte ranges of single files, manifests."""
    pub = data / "published"
    segs, ranges, manifests, mixed = [], [], [], []
    for asset in sorted(p.parent for p in pub.glob("*/asset.json")):
        prefix = f"/assets/{asset.name}"
        for f in sorted(asset.rglob("*")):
            if not f.is_file():
                continue
            rel = f.relative_to(asset).as_posix()
            entry = (f"{prefix}/{rel}", f.stat().st_size)
            if f.suffix == ".m4s":
                segs.append(entry)
            elif f.suffix in (".m3u8", ".mpd"):
                manifests.append(entry)
            if f.suffix in (".m4s", ".m3u8", ".mpd") or f.name == "init.mp4":
                mixed.append(entry)
        for pl in sorted((asset / "single").glob("*.m3u8")):
            parsed = m3u8.loads(pl.read_text())
            if parsed.is_variant:
                continue
            end = 0
            for seg in parsed.segments:
                if not seg.byterange:
                    continue
                length, _, offset = seg.byterange.partition("@")
                start = int(offset) if offset else end
                end = start + int(length)
                target = asset / "single" / seg.uri
                ranges.append((f"{prefix}/single/{seg.uri}", target.stat().st_size, f"bytes={start}-{end - 1}"))
    if not segs or not manifests:
        raise RuntimeError(f"no published segments or manifests under {pub}")
    out = {"segment": write_paths(lists / "segments.txt", segs),
           "manifest": write_paths(lists / "manifests.txt", manifests),
           "mixed": write_paths(lists / "mixed.txt", mixed)}
    if ranges:
        out["range"] = write_paths(lists / "ranges.txt", ranges)
    return out

