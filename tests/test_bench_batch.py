"""`tonearm ingest --jobs N`: masters across worker processes, every input accounted for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_ingest import copy, make

from tonearm.app.batch import process_many
from tonearm.app.pipeline import Outcome
from tonearm.core.config import load

ROOT = Path(__file__).resolve().parent.parent

# Slow (make test, not make test-fast): worker pools publishing masters, in process and as `tonearm ingest`.
pytestmark = pytest.mark.slow


def tonearm(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "tonearm.app.cli", "--data", str(data), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_jobs_publishes_in_parallel_and_reports_every_input(tmp_path: Path) -> None:
    a = make(tmp_path, "a", "flac", rate=44100, seconds=2)
    b = make(tmp_path, "b", "wav", rate=96000, layout="mono", seconds=2)
    twin = copy(a, tmp_path / "a twin.flac")  # same bytes as a, ingested at the same time by another worker
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(4096))
    p = tonearm(tmp_path / "data", "ingest", "--jobs", "2", "--json", str(a), str(b), str(twin), str(junk))
    assert p.returncode == 1, p.stderr  # one input was rejected
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert sorted(Path(r["source"]).name for r in records) == sorted(x.name for x in (a, b, twin, junk))
    outcome = {Path(r["source"]).name: r["outcome"] for r in records}
    assert outcome["junk.wav"] == "quarantined"
    assert outcome["b.wav"] == "published"
    assert sorted([outcome["a.flac"], outcome["a twin.flac"]]) == ["already_published", "published"]
    published = sorted(d.name for d in (tmp_path / "data" / "published").iterdir())
    assert published == sorted({r["asset_id"] for r in records if r["outcome"] != "quarantined"})
    assert all((tmp_path / "data" / "published" / d / "master.m3u8").is_file() for d in published)


def test_process_many_in_process_matches_pool(tmp_path: Path) -> None:
    src = make(tmp_path, "c", "flac", seconds=1)
    cfg = load(env={}, overrides={"storage": {"root": str(tmp_path / "data")}})
    (first,) = process_many(cfg, [src], jobs=1)
    again = list(process_many(cfg, [src, copy(src, tmp_path / "c2.flac")], jobs=2))
    assert first.outcome is Outcome.PUBLISHED
    assert [r.outcome for r in again] == [Outcome.ALREADY_PUBLISHED] * 2
    assert {r.asset_id for r in again} == {first.asset_id}


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    src = make(tmp_path, "d", "flac", seconds=1)
    p = tonearm(tmp_path / "data", "ingest", "--jobs", "0", str(src))
    assert p.returncode == 2
    assert "--jobs" in p.stderr and "Traceback" not in p.stderr
