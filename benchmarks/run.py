"""``make bench``: the whole benchmark, end to end, on this machine, loopback only.

    python -m benchmarks.run [--quick] [--only pipeline,origin,memory,edge,spike]

Every figure is a ratio against a baseline measured in the same run (the
encoder floor, a naive pipeline, nginx, the origin's own warm-up RSS, the
load generator's own requests).  Results go to ``benchmarks/results/``:
``results.json`` (everything measured), ``report.md`` (figures with their
targets, pass or miss) and SVG charts.  Work files go to ``benchmarks/work/``
(``make clean`` removes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import m3u8

from benchmarks import catalog, pipeline
from benchmarks.listeners import percentile, run_listeners, summarize
from benchmarks.report import write_report
from benchmarks.servers import Edge, RssSampler, children, rss_kib
from benchmarks.wrk import run_wrk, write_paths
from tests.fixtures_servers import start_nginx, start_origin
from tonearm.config import load
from tonearm.ffmpeg import locate

HERE = Path(__file__).resolve().parent
SECTIONS = ("pipeline", "origin", "memory", "edge", "spike")


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


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _busy(seconds: float = 2.0) -> float:
    """Share of all cores busy over a short pause while this benchmark runs nothing (other users' load)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


def _tool_version(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
        return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE.parent, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


# -- pipeline ------------------------------------------------------------------------------------------------

def bench_pipeline(b: Bench) -> None:
    s = b.scale
    cfg = load(env={})
    ff = locate(cfg.ffmpeg.path)
    cores = os.cpu_count() or 1
    specs = catalog.plan(s.masters, min_seconds=s.min_seconds, max_seconds=s.max_seconds)
    t0 = time.monotonic()
    masters = [pipeline.Master(spec, catalog.write_master(spec, b.work / "masters", ffmpeg=ff.path)) for spec in specs]
    audio_s = sum(spec.seconds for spec in specs)
    gen_s = time.monotonic() - t0
    print(f"bench: {len(masters)} masters, {audio_s / 60:.1f} min of audio (generated in {gen_s:.0f} s)", flush=True)

    load_before = _load()
    busy = _busy()
    fl = pipeline.floor(masters, cfg, ff, b.work / "floor", cores=cores)
    print(f"bench: floor {fl['floor_wall_s']:.1f} s ({fl['encode_cpu_s']:.1f} CPU s / {cores} cores)", flush=True)
    nv = pipeline.naive(masters, cfg, ff, b.work / "naive")
    print(f"bench: naive {nv['wall_s']:.1f} s", flush=True)
    tn = pipeline.tonearm_ingest(masters, ff, b.work / "data", jobs=b.args.jobs or cores, cores=cores)
    print(f"bench: tonearm ingest --jobs {tn['jobs']} {tn['wall_s']:.1f} s", flush=True)

    b.results["pipeline"] = {
        "ffmpeg": {"path": ff.path, "source": ff.source, "version": ff.version},
        "ladder": [r.name for r in cfg.ladder.all_rungs],
        "masters": [{"name": m.spec.name, "seconds": m.spec.seconds, "sample_rate": m.spec.sample_rate,
                     "channels": m.spec.channels, "container": m.spec.container} for m in masters],
        "audio_seconds": audio_s, "floor": fl, "naive": nv, "tonearm": tn,
        "load_before": load_before, "busy_before": busy,
        "load_after": _load(),
    }
    ratio = tn["wall_s"] / fl["floor_wall_s"]
    b.fig("pipeline", "tonearm wall time / encoder floor", ratio, "x", "<= 1.15", ratio <= 1.15,
          baseline=f"floor {fl['floor_wall_s']:.1f} s = {fl['encode_cpu_s']:.1f} encoder CPU s / {cores} cores",
          note=f"tonearm {tn['wall_s']:.1f} s for {len(masters)} masters, --jobs {tn['jobs']}")
    rtf = audio_s / tn["wall_s"]
    floor_rtf = audio_s / fl["floor_wall_s"]
    b.fig("pipeline", "real-time factor (audio s per wall s)", rtf, "x", f"report (floor allows {floor_rtf:.0f}x)",
          None, baseline=f"floor {floor_rtf:.1f}x", note=f"{audio_s / 60:.1f} min of audio")
    speedup = nv["wall_s"] / tn["wall_s"]
    ideal = nv["wall_s"] / fl["floor_wall_s"]
    b.fig("pipeline", "speed-up over naive (1 ffmpeg per rung per master, serial)", speedup, "x",
          f"report (at the floor: {ideal:.2f}x)", None,
          baseline=f"naive {nv['wall_s']:.1f} s, {nv['processes']} ffmpeg runs",
          note="naive decodes and resamples once per rung, one process at a time")
    overhead = tn["cpu_s"] / fl["encode_cpu_s"]
    b.fig("pipeline", "tonearm CPU seconds / encoder-only CPU seconds", overhead, "x", "report", None,
          baseline=f"{fl['encode_cpu_s']:.1f} s in the encoders alone",
          note="decode, loudness scan, resampling, packaging and Python on top of the encoders")
    util = tn["cpu_utilisation"]
    b.fig("pipeline", "CPU utilisation during ingest", util * 100, "%", ">= 85", util >= 0.85,
          baseline=f"{tn['cpu_s']:.1f} CPU s of all children / ({tn['wall_s']:.1f} s x {cores} cores)")
    b.charts["pipeline.svg"] = _chart_pipeline(fl, nv, tn)


def _chart_pipeline(fl: dict[str, Any], nv: dict[str, Any], tn: dict[str, Any]) -> str:
    from benchmarks.svg import bar_chart

    return bar_chart("Catalog ingest, wall seconds (lower is better)", ["encoder floor", "tonearm", "naive"],
                     {"wall s": [fl["floor_wall_s"], tn["wall_s"], nv["wall_s"]]}, "seconds")


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


# -- origin vs nginx -----------------------------------------------------------------------------------------

def bench_origin(b: Bench) -> None:
    s = b.scale
    data = published_tree(b)
    lists = url_lists(data, b.work / "lists")
    modes = {"segment": "full", "range": "range", "manifest": "full"}
    rows: list[dict[str, Any]] = []
    no_log = {"TONEARM_ORIGIN_ACCESS_LOG": ""}  # nginx runs with access_log off: compare like for like
    servers: list[tuple[str, Callable[[], Any]]] = [("nginx", lambda: start_nginx(data / "published"))]
    for w in s.origin_workers:
        servers.append((f"tonearm-w{w}", lambda w=w: start_origin(data, workers=w, env=no_log)))
    load_before = _load()
    busy = _busy()
    for name, start in servers:
        with start() as srv:
            for scenario, mode in modes.items():
                if scenario not in lists:
                    continue
                for conns in s.connections:
                    r = run_wrk(srv.base_url, lists[scenario], mode=mode, connections=conns, duration=s.wrk_seconds)
                    rows.append({"server": name, "scenario": scenario, "connections": conns, **r.to_json()})
                    print(f"bench: {name:<11} {scenario:<8} c={conns:<4} {r.rps:9.0f} req/s  "
                          f"p50 {r.latency_ms['p50']:.2f} ms  p99 {r.latency_ms['p99']:.2f} ms  errors {r.failed}",
                          flush=True)
    b.results["origin"] = {"rows": rows, "load_before": load_before, "load_after": _load(), "busy_before": busy,
                           "wrk": _tool_version(["wrk", "-v"]), "nginx": _tool_version(["nginx", "-v"])}
    base = {(r["scenario"], r["connections"]): r for r in rows if r["server"] == "nginx"}
    for r in rows:
        if r["server"] == "nginx":
            continue
        n = base[(r["scenario"], r["connections"])]
        rps_ratio = r["rps"] / n["rps"] if n["rps"] else 0.0
        p99_ratio = r["latency_ms"]["p99"] / n["latency_ms"]["p99"] if n["latency_ms"]["p99"] else 0.0
        judged = r["scenario"] == "segment"
        label = f"{r['server']} {r['scenario']} GETs c={r['connections']}"
        errors = sum(r["errors"].values())
        b.fig("origin", f"{label}: req/s vs nginx", rps_ratio, "x", ">= 0.5" if judged else "report",
              (rps_ratio >= 0.5 and errors == 0) if judged else None,
              baseline=f"nginx {n['rps']:.0f} req/s", note=f"{r['rps']:.0f} req/s, {errors} errors")
        b.fig("origin", f"{label}: p99 latency vs nginx", p99_ratio, "x", "<= 2.0" if judged else "report",
              p99_ratio <= 2.0 if judged else None, baseline=f"nginx p99 {n['latency_ms']['p99']:.2f} ms",
              note=f"p50 {r['latency_ms']['p50']:.2f} ms, p99 {r['latency_ms']['p99']:.2f} ms")
    from benchmarks.svg import bar_chart

    for scenario in modes:
        sel = [r for r in rows if r["scenario"] == scenario]
        if not sel:
            continue
        names = list(dict.fromkeys(r["server"] for r in sel))
        b.charts[f"origin-{scenario}.svg"] = bar_chart(
            f"{scenario} GETs over loopback, requests/s (wrk, {s.wrk_seconds:g} s each)",
            [f"c={c}" for c in s.connections],
            {n: [next((r["rps"] for r in sel if r["server"] == n and r["connections"] == c), 0.0)
                 for c in s.connections] for n in names}, "requests/s")


# -- memory --------------------------------------------------------------------------------------------------

def bench_memory(b: Bench) -> None:
    """VmRSS of `tonearm serve` (all its processes) while it answers ``memory_requests`` requests."""
    s = b.scale
    data = published_tree(b)
    lists = url_lists(data, b.work / "lists")
    log = b.work / "origin-memory-access.log"
    log.unlink(missing_ok=True)
    out: dict[str, Any] = {}
    for workers in s.origin_workers:
        with start_origin(data, workers=workers, env={"TONEARM_ORIGIN_ACCESS_LOG": str(log)}) as srv:
            pids = [srv.pid, *children(srv.pid)]
            start_rss = rss_kib(pids)
            urls = len(lists["mixed"].read_text().splitlines())
            done = 0
            while done < max(s.memory_warmup, 4 * urls):  # every URL about 4 times: caches and pools filled
                done += run_wrk(srv.base_url, lists["mixed"], connections=64,
                                duration=max(1.0, s.wrk_seconds / 4)).requests
            warm_rss = rss_kib(pids)
            total = 0
            chunks = []
            with RssSampler(pids, interval=0.25) as sampler:
                while total < s.memory_requests:
                    r = run_wrk(srv.base_url, lists["mixed"], connections=64, duration=max(1.0, s.wrk_seconds / 2))
                    total += r.requests
                    chunks.append(r.to_json())
            samples = sampler.samples
            peak = max(v for _, v in samples)
            end = samples[-1][1]
        out[f"w{workers}"] = {"pids": len(pids), "start_kib": start_rss, "warm_kib": warm_rss, "peak_kib": peak,
                              "end_kib": end, "requests": total, "warmup_requests": done,
                              "errors": sum(sum(c["errors"].values()) for c in chunks), "samples": samples}
        growth = peak / warm_rss - 1 if warm_rss else 0.0
        b.fig("memory", f"tonearm-w{workers} RSS growth over {total:,} requests after warm-up", growth * 100, "%",
              "<= 10", growth <= 0.10, baseline=f"{warm_rss / 1024:.1f} MiB after {done:,} warm-up requests",
              note=f"peak {peak / 1024:.1f} MiB, end {end / 1024:.1f} MiB, {len(pids)} processes")
        print(f"bench: memory w{workers}: warm {warm_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
              f"over {total} requests", flush=True)
    b.results["memory"] = out
    from benchmarks.svg import line_chart

    b.charts["memory.svg"] = line_chart("Origin resident memory during the request run", {
        k: [(t, kib / 1024) for t, kib in v["samples"]] for k, v in out.items()},
        "seconds", "MiB (VmRSS, all processes)")


# -- edge: hot release and spike -----------------------------------------------------------------------------

_METRIC = re.compile(r'^(tonearm_http_requests_total|tonearm_http_response_bytes_total)\{([^}]*)\}\s+(\S+)$')


def origin_counters(base: str) -> dict[str, float]:
    """Requests and body bytes the origin counted for assets (routes media/init/manifest)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    req = byt = 0.0
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m or not re.search(r'route="(media|init|manifest)"', m.group(2)):
            continue
        if m.group(1) == "tonearm_http_requests_total":
            req += float(m.group(3))
        else:
            byt += float(m.group(3))
    return {"requests": req, "bytes": byt}


def origin_access_counts(log: Path, asset: str) -> Counter[str]:
    """Requests per path for one asset, counted from the origin's own JSON access log."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and asset in rec.get("path", ""):
            counts[rec["path"]] += 1
    return counts


def _assets(data: Path) -> list[tuple[str, float]]:
    out = []
    for desc in (data / "published").glob("*/asset.json"):
        info = json.loads(desc.read_text())
        out.append((desc.parent.name, float(info.get("duration_s") or 0)))
    return sorted(out, key=lambda a: (-a[1], a[0]))


def bench_edge(b: Bench) -> None:
    s = b.scale
    data = published_tree(b)
    assets = _assets(data)
    hot, spike_asset = assets[0][0], assets[1 % len(assets)][0]
    log = b.work / "origin-edge-access.log"
    log.unlink(missing_ok=True)
    workers = max(s.origin_workers)
    with start_origin(data, workers=workers, env={"TONEARM_ORIGIN_ACCESS_LOG": str(log)}) as origin, \
            Edge(int(origin.base_url.rsplit(":", 1)[1]), b.work / "edge", workers="1") as edge:
        edge.start(b.work / "logs", ready_path="/healthz")
        if "edge" in b.args.only:
            _hot_release(b, origin.base_url, edge, hot, log)
        if "spike" in b.args.only:
            _spike(b, edge.base + f"/assets/{spike_asset}/master.m3u8", "edge", s)
    if "spike" in b.args.only:
        with start_origin(data, workers=workers, env={"TONEARM_ORIGIN_ACCESS_LOG": ""}) as origin:
            _spike(b, origin.base_url + f"/assets/{spike_asset}/master.m3u8", f"origin-w{workers}", s)


def _hot_release(b: Bench, origin_base: str, edge: Edge, asset: str, log: Path) -> None:
    n = b.scale.hot_listeners
    before = origin_counters(origin_base)
    load_before = _load()
    busy = _busy()
    run = run_listeners(edge.base + f"/assets/{asset}/master.m3u8", [0.0] * n)
    time.sleep(1.2)  # the origin flushes its access log every 0.5 s
    after = origin_counters(origin_base)
    o_req = after["requests"] - before["requests"]
    o_bytes = after["bytes"] - before["bytes"]
    total = summarize(run.fetches, None)
    segs = summarize(run.fetches, "segment")
    per_path = origin_access_counts(log, asset)
    seg_paths = {f.url.split("/assets/", 1)[1] for f in run.fetches if f.kind == "segment"}
    seg_counts = {p: per_path.get(f"/assets/{p}", 0) for p in seg_paths}
    more_than_once = sorted(p for p, c in seg_counts.items() if c > 1)
    never = sorted(p for p, c in seg_counts.items() if c == 0)
    b.results["edge"] = {
        "asset": asset, "listeners": n, "client": total, "segments": segs,
        "origin": {"requests": o_req, "bytes": o_bytes, "per_path": dict(per_path)},
        "segments_at_origin_more_than_once": more_than_once, "segments_never_at_origin": never,
        "load_before": load_before, "load_after": _load(), "busy_before": busy,
    }
    share = o_req / total["requests"] if total["requests"] else 1.0
    byte_share = o_bytes / total["bytes"] if total["bytes"] else 1.0
    b.fig("edge", f"hot release, {n} listeners: request offload", (1 - share) * 100, "%", ">= 99", share <= 0.01,
          baseline=f"{total['requests']:,} listener requests", note=f"{o_req:.0f} reached the origin (its /metrics)")
    b.fig("edge", f"hot release, {n} listeners: byte offload", (1 - byte_share) * 100, "%", ">= 99",
          byte_share <= 0.01, baseline=f"{total['bytes'] / 1e6:.1f} MB to listeners",
          note=f"{o_bytes / 1e6:.2f} MB from the origin")
    b.fig("edge", "segments fetched from the origin more than once", float(len(more_than_once)), "segments", "0",
          not more_than_once, baseline=f"{len(seg_paths)} distinct segments (origin access log)",
          note=f"{len(never)} never reached it" if never else "request collapsing: each exactly once")
    b.fig("edge", "hot release failed requests", float(total["failed"]), "requests", "0", total["failed"] == 0,
          baseline=f"{total['requests']:,} requests", note=f"segment p99 {segs['latency_ms']['p99']:.1f} ms")
    print(f"bench: hot release {n} listeners: {total['requests']} requests, origin {o_req:.0f}, "
          f"failed {total['failed']}", flush=True)


def _spike(b: Bench, master_url: str, target: str, s: Scale) -> None:
    extra = s.spike_to - s.spike_from
    ramp_at = 1.0 + s.spike_hold_s
    starts = [0.0] * s.spike_from + [ramp_at + s.spike_ramp_s * i / max(1, extra) for i in range(extra)]
    # One listener plays the asset first (untimed): caches are warm, so before and during the spike
    # differ only in concurrency (the cold, collapsed case is the hot-release test's).
    run_listeners(master_url, [0.0], segments=s.spike_segments)
    load_before = _load()
    busy = _busy()
    run = run_listeners(master_url, starts, segments=s.spike_segments, buffer=3, pace=s.spike_pace_s)
    segs = [f for f in run.fetches if f.kind == "segment"]
    before = [f.latency * 1000 for f in segs if f.ok and f.start < ramp_at]
    during = [f.latency * 1000 for f in segs if f.ok and f.start >= ramp_at]
    failed = sum(1 for f in run.fetches if not f.ok)
    peak = max((n for _, n in run.active), default=0)
    p99_before, p99_during = percentile(before, 99), percentile(during, 99)
    b.results.setdefault("spike", {})[target] = {
        "listeners_from": s.spike_from, "listeners_to": s.spike_to, "ramp_s": s.spike_ramp_s, "peak_concurrent": peak,
        "all": summarize(run.fetches, None), "segments": summarize(run.fetches, "segment"),
        "segment_p99_ms_before": p99_before, "segment_p99_ms_during": p99_during,
        "load_before": load_before, "load_after": _load(), "busy_before": busy,
        "timeline": _timeline(run),
    }
    b.fig("spike", f"spike {s.spike_from}->{s.spike_to} listeners in {s.spike_ramp_s:g} s via {target}: "
          "failed requests",
          float(failed), "requests", "0", failed == 0, baseline=f"{len(run.fetches):,} requests",
          note=f"peak {peak} concurrent listeners")
    b.fig("spike", f"spike via {target}: segment p99 during / before the spike", p99_during / p99_before
          if p99_before else 0.0, "x", "report", None, baseline=f"p99 {p99_before:.1f} ms at {s.spike_from} listeners",
          note=f"p99 {p99_during:.1f} ms during the spike")
    print(f"bench: spike via {target}: {len(run.fetches)} requests, failed {failed}, p99 {p99_before:.1f} -> "
          f"{p99_during:.1f} ms, peak {peak} listeners", flush=True)
    if target == "edge":
        from benchmarks.svg import line_chart

        tl = b.results["spike"][target]["timeline"]
        b.charts["spike-listeners.svg"] = line_chart(f"Spike via {target}: concurrent listeners",
                                                     {"listeners": [(t, n) for t, n, _ in tl]}, "seconds", "listeners")
        b.charts["spike-p99.svg"] = line_chart(f"Spike via {target}: segment fetch p99 per second",
                                               {"p99 ms": [(t, p) for t, _, p in tl]}, "seconds", "ms")


def _timeline(run: Any) -> list[tuple[float, int, float]]:
    """(second, listeners running at its end, p99 ms of segments started in it)."""
    end = int(max((f.start + f.latency for f in run.fetches), default=0)) + 1
    out = []
    for sec in range(end):
        lat = [f.latency * 1000 for f in run.fetches if f.kind == "segment" and f.ok and sec <= f.start < sec + 1]
        active = 0
        for t, n in run.active:
            if t <= sec + 1:
                active = n
        out.append((float(sec), active, round(percentile(lat, 99), 3)))
    return out


# -- main ----------------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny scale: proves every code path runs (CI smoke test)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--masters", type=int, help="catalog size (default 20)")
    p.add_argument("--jobs", type=int, default=0, help="tonearm ingest --jobs (default: cores)")
    p.add_argument("--wrk-seconds", type=float, help="duration of each wrk run (default 8)")
    p.add_argument("--out", default=str(HERE / "results"), help="results folder")
    p.add_argument("--work", default=str(HERE / "work"), help="scratch folder (masters, published tree, logs)")
    args = p.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else Scale()
    if args.masters:
        scale = Scale(**{**scale.__dict__, "masters": args.masters})
    if args.wrk_seconds:
        scale = Scale(**{**scale.__dict__, "wrk_seconds": args.wrk_seconds})
    work, out = Path(args.work).absolute(), Path(args.out).absolute()
    if "pipeline" in args.only:
        shutil.rmtree(work / "data", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(args=args, scale=scale, work=work, out=out)
    t0 = time.monotonic()
    b.results["meta"] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": "make bench" + (
            f" BENCH_ARGS='{' '.join(argv or sys.argv[1:])}'" if (argv or sys.argv[1:]) else ""),
        "commit": _git_commit(), "cores": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "scale": scale.__dict__, "load_at_start": _load(),
    }
    if "pipeline" in args.only:
        bench_pipeline(b)
    if "origin" in args.only:
        bench_origin(b)
    if "memory" in args.only:
        bench_memory(b)
    if "edge" in args.only or "spike" in args.only:
        bench_edge(b)
    elapsed = time.monotonic() - t0
    b.results["meta"]["seconds"] = elapsed
    b.results["meta"]["load_at_end"] = _load()
    if not args.quick and set(args.only) == set(SECTIONS):
        b.fig("run", "make bench run time", elapsed / 60, "min", "< 20", elapsed < 1200,
              baseline="20-minute budget on 2 cores")
    b.results["figures"] = [f.to_json() for f in b.figures]
    write_report(out, b.results, b.figures, b.charts)
    missed = [f for f in b.figures if f.ok is False]
    print(f"bench: done in {elapsed / 60:.1f} min; {len(b.figures)} figures, {len(missed)} missed; "
          f"see {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
