"""The capacity model: what 1 M and 10 M concurrent listeners and 100 k new tracks a day need, computed
from figures measured on this machine, each shown with where it was measured.

    .venv/bin/python -m benchmarks.capacity            # or: make capacity (make bench runs it at the end)

Inputs:

* origin req/s and bytes/s per core: ``make bench``'s origin section (benchmarks/results/results.json,
  ``tonearm-w1``: one worker process, segment GETs at 64 connections, wrk on the same 2 cores);
* edge req/s and bytes/s per core: the same run's nginx row (one worker process, same files);
* edge offload on a hot release: ``make bench``'s edge section (500 listeners through deploy/nginx-edge.conf);
* worker real-time factor: ``make bench``'s pipeline section (audio seconds per CPU second, the whole job);
* catalog rows and object-store bytes per asset: measured here, by running the real pipeline on the demo
  master (local storage: the same files, under the same relative keys, as an S3 publish uploads) and
  scaled to the bench corpus' mean track length.

What is not measured is a stated assumption and is marked so in the table: the edge node's NIC, the
head-room kept, the PostgreSQL per-row overhead.  Writes benchmarks/results/capacity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LISTENERS = (1_000_000, 10_000_000)
MEAN_KBPS = 128
TRACKS_PER_DAY = 100_000
# Assumptions (not measurable on one loopback machine); each appears in the table as one.
EDGE_NIC_GBPS = 25.0  # one edge node's usable network link
HEADROOM = 0.6  # run everything at most 60 % busy: a node can fail and a spike can come
PG_ROW_OVERHEAD = 200  # bytes per catalog row beyond its JSON: tuple header, id, state, times, two indexes


def _row(results: dict[str, Any], server: str, scenario: str = "segment", connections: int = 64) -> dict[str, Any]:
    for r in results["origin"]["rows"]:
        if (r["server"], r["scenario"], r["connections"]) == (server, scenario, connections):
            return r
    raise KeyError(f"results.json has no origin row {server}/{scenario}/c={connections}; run make bench")


def measure_asset(work: Path) -> dict[str, Any]:
    """Run the real pipeline on the demo master; count what it published and what the catalog holds."""
    from tonearm.app.demo import write_demo_master
    from tonearm.app.pipeline import Context, process
    from tonearm.core.config import Config, StorageConfig

    cfg = Config(storage=StorageConfig(root=work / "data"))
    master = write_demo_master(work / "masters", cfg)
    result = process(Context.from_config(cfg), master)
    if not result.ok:
        raise RuntimeError(f"the demo master did not publish: {result.to_json()}")
    folder = cfg.storage.root / "published" / result.asset_id
    files = [p for p in folder.rglob("*") if p.is_file()]
    with closing(sqlite3.connect(cfg.catalog_path)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)  # noqa: S608
        info = db.execute("SELECT length(info) FROM assets WHERE id=?", (result.asset_id,)).fetchone()[0]
    return {"asset_id": result.asset_id, "duration_s": result.info["duration_s"],
            "layouts": list(cfg.ladder.layouts), "rungs": [r.name for r in cfg.ladder.all_rungs],
            "published_bytes": sum(p.stat().st_size for p in files), "published_objects": len(files),
            "segment_objects": sum(1 for p in files if p.suffix == ".m4s"),
            "segment_duration_s": cfg.ladder.segment_duration,
            "master_bytes": master.stat().st_size, "catalog_rows": rows, "catalog_tables": tables,
            "catalog_info_bytes": info}


def inputs(results: dict[str, Any], asset: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Each input: (value, where it was measured)."""
    meta = results["meta"]
    run = f"make bench {meta['started']} (commit {meta['commit']}, {meta['cores']} cores)"
    w1, ng = _row(results, "tonearm-w1"), _row(results, "nginx")
    edge, pipe = results["edge"], results["pipeline"]
    n = len(pipe["masters"])
    return {
        "origin_rps_core": (w1["rps"], f"{run}: tonearm-w1 segment GETs c=64, local disk"),
        "origin_Bps_core": (w1["bytes"] / w1["seconds"], f"{run}: same row, bytes / s"),
        "edge_rps_core": (ng["rps"], f"{run}: nginx (1 worker) segment GETs c=64"),
        "edge_Bps_core": (ng["bytes"] / ng["seconds"], f"{run}: same row, bytes / s"),
        "edge_offload": (1 - edge["origin"]["requests"] / edge["client"]["requests"],
                         f"{run}: hot release, {edge['listeners']} listeners via deploy/nginx-edge.conf "
                         f"({int(edge['origin']['requests'])} of {edge['client']['requests']} requests reached "
                         "the origin)"),
        "worker_rtf_core": (pipe["audio_seconds"] / pipe["tonearm"]["cpu_s"],
                            f"{run}: pipeline, {pipe['audio_seconds']:.0f} audio s in {pipe['tonearm']['cpu_s']:.0f}"
                            " CPU s (every child process)"),
        "mean_track_s": (pipe["audio_seconds"] / n, f"{run}: the bench corpus' {n} masters"),
        "object_bytes_per_audio_s": (asset["published_bytes"] / asset["duration_s"],
                                     f"benchmarks/capacity.py: demo master published by the pipeline "
                                     f"({asset['published_objects']} objects, {asset['duration_s']:.1f} s, "
                                     f"ladder {'/'.join(asset['rungs'])}, layouts {'+'.join(asset['layouts'])})"),
        "objects_per_asset": (asset["published_objects"], f"same asset, {asset['segment_objects']} of them segments"),
        "segment_objects_per_segment": (asset["segment_objects"] / math.ceil(asset["duration_s"]
                                                                           / asset["segment_duration_s"]),
                                        "same asset: segment files per 6.4 s of audio (one per segmented rung)"),
        "measured_segments": (math.ceil(asset["duration_s"] / asset["segment_duration_s"]),
                              "same asset: its length in 6.4 s segments"),
        "catalog_rows_per_asset": (asset["catalog_rows"], f"same asset: rows in {', '.join(asset['catalog_tables'])}"),
        "catalog_info_bytes": (asset["catalog_info_bytes"], "same asset: its catalog row's info JSON"),
    }


def model(i: dict[str, tuple[float, str]]) -> list[tuple[str, str, str, str]]:
    """Rows (quantity, 1 M listeners, 10 M listeners, how) for the listener side, then the ingest side."""
    v = {k: x[0] for k, x in i.items()}
    seg_s = 6.4  # [ladder] segment_duration: one segment request per listener per 6.4 s
    out: list[tuple[str, str, str, str]] = []

    def row(name: str, f: Any, how: str, fmt: str = "{:,.0f}") -> None:
        out.append((name, *(fmt.format(f(n)) for n in LISTENERS), how))

    egress = lambda n: n * MEAN_KBPS * 1000 / 8  # noqa: E731  bytes/s
    rps = lambda n: n / seg_s  # noqa: E731
    row("egress to listeners", lambda n: egress(n) * 8 / 1e9, f"listeners x {MEAN_KBPS} kb/s", "{:,.0f} Gb/s")
    row("segment requests", rps, f"listeners / {seg_s} s segments", "{:,.0f} req/s")
    row("edge cores (CPU)", lambda n: math.ceil(max(rps(n) / v["edge_rps_core"], egress(n) / v["edge_Bps_core"])
                                                 / HEADROOM),
        f"max(req/s / edge_rps_core, bytes/s / edge_Bps_core) / {HEADROOM:.0%} busy")
    row("edge nodes", lambda n: math.ceil(egress(n) * 8 / 1e9 / (EDGE_NIC_GBPS * HEADROOM)) + 1,
        f"egress / ({EDGE_NIC_GBPS:g} Gb/s NIC x {HEADROOM:.0%}) + 1 spare (assumed NIC)")
    miss = 1 - v["edge_offload"]
    row("origin req/s, hot release", lambda n: rps(n) * miss, f"segment requests x (1 - offload {v['edge_offload']:.1%})",
        "{:,.0f} req/s")
    row("origin cores, hot release", lambda n: max(3, math.ceil(rps(n) * miss / v["origin_rps_core"] / HEADROOM)),
        "origin req/s / origin_rps_core / headroom; at least 3 (one may fail, one may drain)")
    row("origin cores, every request a miss", lambda n: math.ceil(rps(n) / v["origin_rps_core"] / HEADROOM),
        "the bound for a cold long tail: no edge hit at all")
    row("origin egress, every request a miss", lambda n: egress(n) * 8 / 1e9, "= listener egress", "{:,.0f} Gb/s")
    return out


def ingest(i: dict[str, tuple[float, str]]) -> list[tuple[str, str, str]]:
    v = {k: x[0] for k, x in i.items()}
    audio_day = TRACKS_PER_DAY * v["mean_track_s"]
    cores = audio_day / v["worker_rtf_core"] / 86400
    per_asset = v["object_bytes_per_audio_s"] * v["mean_track_s"]
    row_bytes = v["catalog_info_bytes"] + PG_ROW_OVERHEAD
    rows = v["catalog_rows_per_asset"]
    other = v["objects_per_asset"] - v["segment_objects_per_segment"] * v["measured_segments"]
    objects = other + v["segment_objects_per_segment"] * math.ceil(v["mean_track_s"] / 6.4)
    return [
        ("audio to encode", f"{audio_day / 3600:,.0f} h/day", f"{TRACKS_PER_DAY:,} tracks x mean track length"),
        ("worker cores (average)", f"{math.ceil(cores)}", "audio s per day / worker_rtf_core / 86400 s"),
        ("worker cores (at 60 % busy)", f"{math.ceil(cores / HEADROOM)}", "head-room for a day's peak and retries"),
        ("object store per asset", f"{per_asset / 1e6:,.1f} MB", "object_bytes_per_audio_s x mean track length"),
        ("object store growth", f"{per_asset * TRACKS_PER_DAY / 1e12:,.2f} TB/day, "
                                f"{per_asset * TRACKS_PER_DAY * 365 / 1e15:,.2f} PB/year", "per asset x tracks"),
        ("objects per asset", f"{objects:,.0f}", "the measured asset's other files + segment files per 6.4 s x length"),
        ("object PUTs", f"{objects * TRACKS_PER_DAY / 86400:,.0f}/s average", "objects per asset x tracks / 86400 s"),
        ("catalog rows", f"{rows * TRACKS_PER_DAY:,.0f}/day, {rows * TRACKS_PER_DAY * 365 / 1e6:,.1f} M/year",
         "catalog_rows_per_asset x tracks (job and event rows of the queue come on top)"),
        ("catalog size (PostgreSQL)", f"{row_bytes * rows * TRACKS_PER_DAY * 365 / 1e9:,.1f} GB/year",
         f"(info JSON + {PG_ROW_OVERHEAD} B assumed row overhead) x rows"),
    ]


def human(x: float, unit: str) -> str:
    return f"{x / 1e9:,.2f} G{unit}" if x >= 1e9 else f"{x / 1e6:,.2f} M{unit}" if x >= 1e6 else f"{x:,.1f} {unit}"


def markdown(i: dict[str, tuple[float, str]]) -> str:
    fmt = {"origin_Bps_core": lambda x: human(x, "B/s"), "edge_Bps_core": lambda x: human(x, "B/s"),
           "edge_offload": lambda x: f"{x:.2%}", "object_bytes_per_audio_s": lambda x: f"{x / 1e3:,.1f} kB per audio s",
           "mean_track_s": lambda x: f"{x:.0f} s", "worker_rtf_core": lambda x: f"{x:.1f}x real time"}
    lines = ["Inputs, each measured where it says:", "", "| input | value | measured |", "|---|---:|---|"]
    for k, (val, where) in i.items():
        lines.append(f"| {k} | {fmt.get(k, lambda x: f'{x:,.0f}')(val)} | {where} |")
    lines += ["", f"Assumed, not measured: edge NIC {EDGE_NIC_GBPS:g} Gb/s, {HEADROOM:.0%} busy at most, "
              f"{PG_ROW_OVERHEAD} B per catalog row beyond its JSON.", "",
              f"Listeners at a {MEAN_KBPS} kb/s mean:", "",
              "| quantity | 1 M listeners | 10 M listeners | how |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in model(i)]
    lines += ["", f"Ingest of {TRACKS_PER_DAY:,} new tracks a day:", "", "| quantity | value | how |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in ingest(i)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS / "results.json", help="make bench's results.json")
    p.add_argument("--out", type=Path, default=RESULTS, help="where capacity.json and capacity.md go")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tonearm-capacity-") as tmp:
        asset = measure_asset(Path(tmp))
    table = inputs(results, asset)
    md = markdown(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(json.dumps(
        {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "asset": asset,
         "inputs": {k: {"value": v, "measured": w} for k, (v, w) in table.items()},
         "assumptions": {"edge_nic_gbps": EDGE_NIC_GBPS, "headroom": HEADROOM, "pg_row_overhead": PG_ROW_OVERHEAD},
         "listeners": [dict(zip(("quantity", "1M", "10M", "how"), r)) for r in model(table)],
         "ingest": [dict(zip(("quantity", "value", "how"), r)) for r in ingest(table)]}, indent=2) + "\n")
    (args.out / "capacity.md").write_text(md)
    print(md)
    print(f"capacity: {time.monotonic() - t0:.1f} s; wrote {args.out / 'capacity.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
