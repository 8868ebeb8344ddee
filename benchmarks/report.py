"""results.json, report.md and the SVG charts of one benchmark run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def _mark(ok: bool | None) -> str:
    return {True: "pass", False: "**miss**", None: "info"}[ok]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def _sections(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measured block with its name, one level of nesting included (spike/edge, spike/origin-w2)."""
    out = []
    for name, sec in results.items():
        if not isinstance(sec, dict):
            continue
        out.append((name, sec))
        out += [(f"{name}/{sub}", v) for sub, v in sec.items() if isinstance(v, dict) and "busy_before" in v]
    return out


def write_report(out: Path, results: dict[str, Any], figures: Sequence[Any], charts: dict[str, str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    for name, svg in charts.items():
        (out / name).write_text(svg + "\n")
    meta = results.get("meta", {})
    lines = [
        "# tonearm benchmark report",
        "",
        f"Reproduce with `{meta.get('command', 'make bench')}` (commit {meta.get('commit')}, "
        f"{meta.get('cores')} cores, "
        f"Python {meta.get('python')}, started {meta.get('started')}, took {meta.get('seconds', 0) / 60:.1f} min; "
        f"load average at start {meta.get('load_at_start')}, at end {meta.get('load_at_end')}).",
        "Every figure is a ratio against a baseline measured in the same run. Raw numbers: `results.json`.",
        "",
    ]
    pipe = results.get("pipeline")
    if pipe:
        ff = pipe["ffmpeg"]
        lines += [f"ffmpeg for floor, naive and tonearm alike: `{ff['path']}` ({ff['source']}, {ff['version']}); "
                  f"ladder {', '.join(pipe['ladder'])}; {len(pipe['masters'])} masters, "
                  f"{pipe['audio_seconds'] / 60:.1f} min of audio.", ""]
    sections = list(dict.fromkeys(f.section for f in figures))
    for section in sections:
        lines += [f"## {section}", "", "| figure | value | target | result | baseline (same run) | note |",
                  "|---|---|---|---|---|---|"]
        for f in figures:
            if f.section == section:
                lines.append(f"| {f.name} | {_fmt(f.value)} {f.unit} | {f.target} | {_mark(f.ok)} | {f.baseline} | "
                             f"{f.note} |")
        lines.append("")
        for name in charts:
            if name.startswith(section):
                lines += [f"![{name}]({name})", ""]
    origin = results.get("origin")
    if origin:
        lines += ["### wrk runs", "", "| server | scenario | connections | req/s | p50 ms | p99 ms | errors |",
                  "|---|---|---|---|---|---|---|"]
        for r in origin["rows"]:
            lines.append(f"| {r['server']} | {r['scenario']} | {r['connections']} | {r['rps']:,.0f} | "
                         f"{r['latency_ms']['p50']:.2f} | {r['latency_ms']['p99']:.2f} | {sum(r['errors'].values())} |")
        lines += ["", f"{origin['wrk']}; {origin['nginx']}; nginx: 1 worker, sendfile, access log off; tonearm: "
                      "access log off for these runs (on, to a file, for memory and edge).", ""]
    lines += ["## how to read this", "",
              "- One machine runs everything: wrk (2 threads) and the Python listener generator share the 2 cores "
              "with the server under test, so absolute rates are lower than on separate hosts; ratios within one "
              "run are what carry over.",
              "- Listener latencies (hot release, spike) are measured by one asyncio process; at 1,000 listeners "
              "its own scheduling delay is part of every p99.",
              "- Hot-release p99 includes nginx's request collapsing: requests waiting on proxy_cache_lock re-check "
              "the lock every 500 ms (fixed in nginx), so a collapsed miss costs its waiters up to 0.5 s once.",
              "- Origin rows: a wrk run the hypervisor took more than 10% of the CPU from (steal) is run again, "
              "up to 3 times, for every server alike; the least-stolen run is kept and the others are listed.",
              "- nginx baseline: the config of `tests/fixtures_servers.py` (1 worker, sendfile, tcp_nopush off, "
              "tcp_nodelay on, as the shipped edge config; a corked socket would hold every 206 ~40 ms).",
              ""]
    busy = [(name, sec["busy_before"]) for name, sec in _sections(results) if sec.get("busy_before", 0) > 0.10]
    if busy:
        lines += ["Other processes kept the cores busy when these sections started (share of both cores busy "
                  "during a 2 s pause of the benchmark): " + ", ".join(f"{n} ({b:.0%})" for n, b in busy)
                  + "; re-run when idle for undistorted ratios.", ""]
    else:
        lines += ["Before every section the cores were idle (< 10% busy during a 2 s pause of the benchmark).", ""]
    missed = [f for f in figures if f.ok is False]
    lines += ["## summary", "", f"{len(figures)} figures, {sum(1 for f in figures if f.ok)} pass, {len(missed)} miss."]
    lines += [f"- miss: {f.name}: {_fmt(f.value)} {f.unit} (target {f.target})" for f in missed]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
