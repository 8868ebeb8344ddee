"""`make bench` at a tiny scale: every benchmark code path runs and writes its report.

Two short masters, 1-second wrk runs and a few dozen listeners prove the
benchmark is not broken without spending minutes.  No timing is asserted:
only that each section measured something, that the report shows every figure
with its target, and the one behaviour the benchmark relies on (each segment
of a hot release reaches the origin exactly once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The quick benchmark takes most of a minute and runs nginx (origin vs nginx, the nginx edge).
pytestmark = [pytest.mark.slow, pytest.mark.nginx]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(base / "results"),
                        "--work", str(base / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return base / "results"


def test_every_section_measured(quick: Path) -> None:
    res = json.loads((quick / "results.json").read_text())
    for section in ("pipeline", "origin", "memory", "edge", "spike"):
        assert res.get(section), section
    pipe = res["pipeline"]
    assert len(pipe["tonearm"]["assets"]) == len(pipe["masters"]) == 2
    assert pipe["floor"]["encode_cpu_s"] > 0 and set(pipe["floor"]["per_rung_cpu_s"]) == set(pipe["ladder"])
    assert pipe["naive"]["processes"] == 2 * len(pipe["ladder"])
    small = res["pipeline_small"]  # the small catalog, against its own floor in the same run
    assert len(small["tonearm"]["assets"]) == len(small["masters"]) == 2 and small["floor"]["encode_cpu_s"] > 0
    assert small["tonearm"]["jobs"] == "default"
    spans = res["overhead"]["spans"]["spans_s"]  # the per-master breakdown: every stage was timed
    assert {"hash + copy into storage", "packaging (both layouts)", "catalog writes and reads",
            "ffmpeg run: decode + measure + encode"} <= set(spans) and all(v >= 0 for v in spans.values())
    assert 0 < res["overhead"]["fixed_s"] < res["overhead"]["spans"]["job_s"]
    servers = {(r["server"], r["scenario"]) for r in res["origin"]["rows"]}
    assert {("nginx", "segment"), ("tonearm-w1", "segment"), ("nginx", "range"), ("tonearm-w1", "manifest")} <= servers
    assert all(r["requests"] > 0 for r in res["origin"]["rows"])
    mem = res["memory"]["w1"]
    assert mem["requests"] >= 3000 and mem["warm_kib"] > 0 and len(mem["samples"]) >= 2
    assert set(res["spike"]) == {"edge", "origin-w1"}


def test_hot_release_segments_reach_origin_once(quick: Path) -> None:
    edge = json.loads((quick / "results.json").read_text())["edge"]
    assert edge["client"]["failed"] == 0
    assert edge["segments_at_origin_more_than_once"] == [] and edge["segments_never_at_origin"] == []
    assert 0 < edge["origin"]["requests"] < edge["client"]["requests"]


def test_report_lists_every_figure_with_target_and_charts(quick: Path) -> None:
    res = json.loads((quick / "results.json").read_text())
    report = (quick / "report.md").read_text()
    assert res["figures"]
    for fig in res["figures"]:
        assert fig["target"] and fig["name"] in report
    assert "`" + res["pipeline"]["ffmpeg"]["path"] + "`" in report
    charts = sorted(quick.glob("*.svg"))
    assert {c.name for c in charts} >= {"pipeline.svg", "origin-segment.svg", "memory.svg", "spike-p99.svg"}
    for chart in charts:
        assert ET.parse(chart).getroot().tag.endswith("svg")
        assert f"]({chart.name})" in report
