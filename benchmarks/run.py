"""``make bench``: the whole benchmark, end to end, on this machine, loopback only.

    python -m benchmarks.run [--quick] [--only pipeline,small,origin,memory,edge,spike,protection]

Every figure is a ratio against a baseline measured in the same run (the
encoder floor, a naive pipeline, nginx, the origin's own warm-up RSS, the
load generator's own requests).  Results go to ``benchmarks/results/``:
``results.json`` (everything measured), ``report.md`` (figures with their
targets, pass or miss) and SVG charts.  Work files go to ``benchmarks/work/``
(``make clean`` removes them).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks import catalog, pipeline
from benchmarks.edge import bench_edge
from benchmarks.harness import (
    HERE,
    QUICK,
    SECTIONS,
    Bench,
    Scale,
    Steal,
    busy_fraction,
    git_commit,
    load_average,
    published_tree,
    tool_version,
    url_lists,
)
from benchmarks.protection import bench_protection
from benchmarks.report import write_report
from benchmarks.small_catalog import LARGE_TARGET, bench_overhead, bench_small
from benchmarks.servers import RssSampler, children, rss_kib
from benchmarks.wrk import run_wrk
from tests.fixtures_servers import start_nginx, start_origin
from tonearm.core.config import load
from tonearm.core.ffmpeg import locate

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

    load_before = load_average()
    busy = busy_fraction()
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
        "load_after": load_average(),
    }
    ratio = tn["wall_s"] / fl["floor_wall_s"]
    b.fig("pipeline", "tonearm wall time / encoder floor", ratio, "x", f"<= {LARGE_TARGET:.2f}", ratio <= LARGE_TARGET,
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
    load_before = load_average()
    busy = busy_fraction()
    for name, start in servers:
        with start() as srv:
            for scenario, mode in modes.items():
                if scenario not in lists:
                    continue
                # Warm-up, not measured: every server answers from a warm cache (nginx's page cache is warm
                # from publishing; the origin's own cache starts empty and would put its first loads in p99).
                run_wrk(srv.base_url, lists[scenario], mode=mode, connections=s.connections[0],
                        duration=max(1.0, s.wrk_seconds / 2))
                for conns in s.connections:
                    # The hypervisor's steal comes in bursts of seconds and halves a run's rate: a run it took
                    # over STEAL_LIMIT of is measured again (every server alike), and the least-stolen is kept.
                    tries: list[tuple[float, Any]] = []
                    while len(tries) < STEAL_TRIES and (not tries or min(t[0] for t in tries) > STEAL_LIMIT):
                        with Steal() as steal:
                            r = run_wrk(srv.base_url, lists[scenario], mode=mode, connections=conns,
                                        duration=s.wrk_seconds)
                        tries.append((steal.fraction, r))
                        print(f"bench: {name:<11} {scenario:<8} c={conns:<4} {r.rps:9.0f} req/s  "
                              f"p50 {r.latency_ms['p50']:.2f} ms  p99 {r.latency_ms['p99']:.2f} ms  errors {r.failed}"
                              f"  steal {steal.fraction * 100:.0f}%", flush=True)
                    kept = min(range(len(tries)), key=lambda i: tries[i][0])
                    stolen, r = tries[kept]
                    rows.append({"server": name, "scenario": scenario, "connections": conns, **r.to_json(),
                                 "steal": stolen, "kept": kept, "attempts": [{"steal": f, "rps": t.rps, "p99_ms": t.latency_ms["p99"]}
                                                               for f, t in tries]})
    b.results["origin"] = {"rows": rows, "load_before": load_before, "load_after": load_average(), "busy_before": busy,
                           "wrk": tool_version(["wrk", "-v"]), "nginx": tool_version(["nginx", "-v"])}
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
              baseline=f"nginx {n['rps']:.0f} req/s (steal {n.get('steal', 0) * 100:.0f}%{_others(n)})",
              note=f"{r['rps']:.0f} req/s, {errors} errors, steal {r.get('steal', 0) * 100:.0f}%{_others(r)}")
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


STEAL_LIMIT = 0.10  # a wrk run the hypervisor took more than this share of the CPU from is run again
STEAL_TRIES = 3


def _others(row: dict[str, Any]) -> str:
    """The runs measured again for steal, as "; also 4512 req/s at 38% steal"."""
    others = [a for i, a in enumerate(row.get("attempts", [])) if i != row.get("kept", 0)]
    return "".join(f"; also {a['rps']:.0f} req/s at {a['steal'] * 100:.0f}% steal" for a in others)


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
        "commit": git_commit(), "cores": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "scale": scale.__dict__, "load_at_start": load_average(),
    }
    if "pipeline" in args.only:
        bench_pipeline(b)
    if "small" in args.only:  # the small catalog against its own floor, and the per-master breakdown
        cfg = load(env={})
        ff = locate(cfg.ffmpeg.path)
        bench_small(b, cfg, ff)
        bench_overhead(b, ff)
    if "origin" in args.only:
        bench_origin(b)
    if "memory" in args.only:
        bench_memory(b)
    if "edge" in args.only or "spike" in args.only:
        bench_edge(b)
    if "protection" in args.only:
        bench_protection(b)
    elapsed = time.monotonic() - t0
    b.results["meta"]["seconds"] = elapsed
    b.results["meta"]["load_at_end"] = load_average()
    if not args.quick and set(args.only) == set(SECTIONS):
        b.fig("run", "make bench run time", elapsed / 60, "min", "< 20", elapsed < 1200,
              baseline="20-minute budget on 2 cores")
    b.results["figures"] = [f.to_json() for f in b.figures]
    write_report(out, b.results, b.figures, b.charts)
    if not args.quick and set(args.only) == set(SECTIONS):  # the capacity model from this run's figures
        from benchmarks.capacity import main as capacity

        capacity(["--results", str(out / "results.json"), "--out", str(out)])
    missed = [f for f in b.figures if f.ok is False]
    print(f"bench: done in {elapsed / 60:.1f} min; {len(b.figures)} figures, {len(missed)} missed; "
          f"see {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
