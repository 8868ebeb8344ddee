"""Ingest through the real pipeline and the real ``tonearm`` command.

Quarantine and idempotency need no transcoding; the publish tests run the
whole ladder on short masters (transcode, packager and manifests are real).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_ingest import copy, make, patch_wav_data_size, truncate

from ingest import content_id
from tonearm.app.pipeline import Context, Outcome, process
from tonearm.core.catalog import Catalog
from tonearm.core.config import load
from tonearm.core.model import AssetState

ROOT = Path(__file__).resolve().parent.parent


def ctx_for(data: Path) -> Context:
    return Context.from_config(load(None, env={}, overrides={"storage": {"root": str(data)}}))


def tonearm(data: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "tonearm.app.cli", "--data", str(data), *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=240)


def test_same_bad_bytes_twice_make_one_quarantine_record(tmp_path):
    src = make(tmp_path, "w", "wav", seconds=2)
    bad = patch_wav_data_size(src, tmp_path / "bad.wav", 0.5)
    twin = copy(bad, tmp_path / "same bytes, other name.wav")
    ctx = ctx_for(tmp_path / "data")
    first = process(ctx, bad)
    assert first.outcome is Outcome.QUARANTINED and first.error.code == "duration_mismatch"
    folder = tmp_path / "data" / "quarantine" / first.asset_id
    reason_file = folder / "reason.json"
    stamp = reason_file.stat().st_mtime_ns
    record = ctx.catalog.get(first.asset_id)
    assert record.state is AssetState.QUARANTINED and record.error["code"] == "duration_mismatch"

    for path in (bad, twin):
        again = process(ctx, path)
        assert again.outcome is Outcome.QUARANTINED and again.asset_id == first.asset_id
        assert again.error.code == "duration_mismatch"
    assert [p.name for p in (tmp_path / "data" / "quarantine").iterdir()] == [first.asset_id]
    assert reason_file.stat().st_mtime_ns == stamp  # the repeats did no work at all
    assert ctx.catalog.get(first.asset_id).updated_at == record.updated_at
    assert ctx.catalog.count() == 1
    assert (folder / "master.bin").read_bytes() == bad.read_bytes()
    reason = json.loads(reason_file.read_text())
    assert reason["code"] == "duration_mismatch" and reason["message"] and reason["details"]["trailing_bytes"] > 0


def test_quarantine_keeps_a_copy_and_a_reason_for_each_kind(tmp_path):
    ctx = ctx_for(tmp_path / "data")
    src = make(tmp_path, "src", "flac", seconds=4)
    corpus = {
        "empty_file": tmp_path / "empty.flac",
        "not_audio": tmp_path / "noise.mp3",
        "truncated": truncate(src, tmp_path / "cut.flac"),
    }
    corpus["empty_file"].touch()
    corpus["not_audio"].write_bytes(random.Random(7).randbytes(4096))
    for code, path in corpus.items():
        before = path.read_bytes()
        result = process(ctx, path)
        assert result.outcome is Outcome.QUARANTINED and result.error.code == code
        key = result.asset_id or result.error.details["quarantine_id"]
        folder = tmp_path / "data" / "quarantine" / key
        reason = json.loads((folder / "reason.json").read_text())
        assert (reason["code"], reason["source_name"]) == (code, path.name)
        assert path.read_bytes() == before  # the input is never changed
        if code == "empty_file":  # rejected before there were bytes to hash: the reason alone is kept
            assert reason["bytes_kept"] is False and not (folder / "master.bin").exists()
        else:  # the copy that was hashed and inspected
            assert (folder / "master.bin").read_bytes() == before


@pytest.mark.parametrize("name", ["with space.flac", "ünïcødé 音.flac", "it's \"quoted\".flac", "-rf.flac",
                                  "--help.flac", "file:colon.flac"])
def test_awkward_names(tmp_path, name):
    from ingest import inspect
    from tonearm.core.ffmpeg import locate

    path = make(tmp_path, name, "flac", seconds=1)
    info = inspect(path, asset_id=content_id(path), ffmpeg=locate(), timeout=60)
    assert info.source_name == name and info.duration_s == pytest.approx(1.0)


@pytest.mark.slow  # `tonearm ingest` batches in subprocesses
def test_cli_rejects_bad_files_with_one_line_each(tmp_path):
    src = make(tmp_path, "w", "wav", seconds=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    patch_wav_data_size(src, inputs / "-lies.wav", 2.0)
    (inputs / "empty.flac").touch()
    (inputs / "escape.flac").symlink_to(src)
    expected = {inputs / "-lies.wav": "truncated", inputs / "empty.flac": "empty_file",
                inputs / "escape.flac": "symlink_outside_input", tmp_path / "missing.mp3": "not_found"}
    proc = tonearm(tmp_path / "data", "ingest", str(inputs), str(tmp_path / "missing.mp3"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("quarantined: ")]
    assert len(lines) == len(expected)
    for path, code in expected.items():
        assert sum(line.startswith(f"quarantined: {path}: {code}: ") for line in lines) == 1, (path, lines)
    assert src.read_bytes() and (inputs / "escape.flac").is_symlink()


@pytest.mark.slow  # `tonearm ingest` batches in subprocesses
def test_cli_json_records_for_bad_files(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVE" + random.Random(8).randbytes(100))
    (tmp_path / "b.flac").touch()
    proc = tonearm(tmp_path / "data", "ingest", "--json", str(tmp_path / "a.wav"), str(tmp_path / "b.flac"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    records = {Path(r["source"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert {name: (r["outcome"], r["error"]["code"]) for name, r in records.items()} == {
        "a.wav": ("quarantined", "not_audio"), "b.flac": ("quarantined", "empty_file")}


# --- full publish of good masters (transcode, packager and manifests run for real) ---------------------


@pytest.mark.slow  # `tonearm ingest` batches in subprocesses
def test_cli_publishes_a_good_master_then_does_nothing_the_second_time(tmp_path):
    good = make(tmp_path, "good song", "flac", seconds=3)
    data = tmp_path / "data"
    first = tonearm(data, "ingest", "--json", str(good))
    assert first.returncode == 0, first.stderr
    (record,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert record["outcome"] == "published" and record["asset_id"] == content_id(good)
    assert record["info"]["loudness"]["integrated_lufs"] == pytest.approx(-20.0, abs=0.1)
    again = tonearm(data, "ingest", "--json", str(good), str(copy(good, tmp_path / "renamed.flac")))
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["outcome"] for line in again.stdout.splitlines()] == [
        "already_published", "already_published"]
    assert Catalog(data / "catalog.sqlite3").count() == 1
    assert [p.name for p in (data / "published").iterdir()] == [record["asset_id"]]
    assert (data / "masters" / record["asset_id"][:2] / f"{record['asset_id']}.flac").read_bytes() == good.read_bytes()


@pytest.mark.slow  # `tonearm ingest` batches in subprocesses
def test_cli_mixed_batch_exits_nonzero_but_publishes_the_good_one(tmp_path):
    good = make(tmp_path, "ok", "m4a", seconds=3)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + random.Random(9).randbytes(2000))
    proc = tonearm(tmp_path / "data", "ingest", str(good), str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stdout.strip() == f"published: {good} -> {content_id(good)}"
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("quarantined: ")]
    assert line.startswith(f"quarantined: {bad}: not_audio: ")


@pytest.mark.slow  # two `tonearm ingest` processes raced
def test_same_bytes_twice_at_once_yield_one_asset(tmp_path):
    good = make(tmp_path, "race", "flac", seconds=3)
    twin = copy(good, tmp_path / "race twin.flac")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    env["PYTHONPATH"] = str(ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "--data", str(data), "ingest", "--json", str(p)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (good, twin)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    outcomes = sorted(json.loads(o[0])["outcome"] for o in outs)
    assert outcomes == ["already_published", "published"]
    assert Catalog(data / "catalog.sqlite3").count() == 1
    assert len(list((data / "published").iterdir())) == 1
