"""CDN edge sections: a hot release through the nginx edge, and a 10 -> 1,000 listener spike."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.harness import Bench, Scale, busy_fraction, load_average, published_tree
from benchmarks.listeners import percentile, run_listeners, summarize
from benchmarks.servers import Edge
from tests.fixtures_servers import start_origin

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
    load_before = load_average()
    busy = busy_fraction()
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
        "load_before": load_before, "load_after": load_average(), "busy_before": busy,
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
    load_before = load_average()
    busy = busy_fraction()
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
        "load_before": load_before, "load_after": load_average(), "busy_before": busy,
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

