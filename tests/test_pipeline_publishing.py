"""Publishing is atomic and idempotent, end to end with the real stages.

A job that dies mid-way (an exception inside the packager, or SIGKILL of a running
``tonearm ingest``) leaves nothing visible under published/, and running it again
finishes it; running again on a published asset changes no byte and no mtime; two
``tonearm ingest`` of the same file at once make one asset, encoded once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import m3u8
import pytest
from fixtures_pipeline import make_varied_master, pipeline_config, publish, snapshot

from tonearm.app import pipeline
from tonearm.app.pipeline import Context, Outcome, process
from tonearm.core.catalog import Catalog
from tonearm.core.model import AssetState

# Slow (make test, not make test-fast): every test runs whole ingest jobs, in process and as `tonearm ingest`
# subprocesses (a 90 s master killed mid-ingest and rerun, two raced), 30-40 s in all.
pytestmark = pytest.mark.slow


def tonearm(data: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "--data", str(data), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def published_assets(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "published").iterdir())


def assert_complete(asset: Path) -> None:
    """Every media playlist's segments and init sections exist: nothing half-written."""
    for master in (asset / "master.m3u8", asset / "single" / "master.m3u8"):
        for variant in m3u8.load(str(master)).playlists:
            media = m3u8.load(str(master.parent / variant.uri))
            assert media.is_endlist and media.segments
            for seg in media.segments:
                folder = (master.parent / variant.uri).parent
                assert (folder / seg.uri).is_file() and (folder / seg.init_section.uri).is_file()
    assert (asset / "asset.json").is_file()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_varied_master(tmp_path_factory.mktemp("masters") / "song.flac", seconds=8)


def test_crash_inside_packager_publishes_nothing_and_rerun_finishes(tmp_path: Path, master: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = pipeline_config(tmp_path / "data")
    real = pipeline.package  # the stage as the pipeline calls it
    calls = []

    def crash_after_first_layout(*args, **kw):
        calls.append(kw.get("layout"))
        if len(calls) == 2:  # the first layout is fully written in staging by now
            raise RuntimeError("simulated crash inside the packager")
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "package", crash_after_first_layout)
    result = process(Context.from_config(cfg), master)
    assert result.outcome is Outcome.FAILED and "simulated crash" in result.error.message
    assert published_assets(cfg.data_dir) == []
    assert list((cfg.data_dir / "staging").iterdir()) == []  # the failed job's staging is gone too
    assert Catalog(cfg.catalog_path).get(result.asset_id).state is AssetState.FAILED

    monkeypatch.setattr(pipeline, "package", real)
    again = process(Context.from_config(cfg), master)
    assert again.outcome is Outcome.PUBLISHED and again.asset_id == result.asset_id
    assert published_assets(cfg.data_dir) == [result.asset_id]
    assert_complete(cfg.data_dir / "published" / result.asset_id)


def test_sigkill_mid_ingest_publishes_nothing_and_rerun_finishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    master = make_varied_master(tmp_path / "long.flac", seconds=90)  # a few seconds of encoding to land in
    job = tonearm(data, "ingest", str(master), start_new_session=True)
    encoding = None
    deadline = time.monotonic() + 120
    while encoding is None and time.monotonic() < deadline and job.poll() is None:
        encoding = next((p for p in (data / "staging").glob("*/.encode/*.mp4")), None) if (data / "staging").is_dir() \
            else None
        time.sleep(0.02)
    assert encoding is not None, "the job never started encoding"
    os.killpg(job.pid, signal.SIGKILL)  # tonearm and everything in its process group, no cleanup code runs
    job.communicate(timeout=30)
    staging = encoding.parent.parent
    deadline = time.monotonic() + 10
    while _encoders_writing_into(staging) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _encoders_writing_into(staging) == [], "ffmpeg outlived its killed worker"  # PR_SET_PDEATHSIG
    assert published_assets(data) == []
    rerun = tonearm(data, "ingest", "--json", str(master))
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    record = json.loads(out)
    assert record["outcome"] == "published"
    assert published_assets(data) == [record["asset_id"]]
    assert_complete(data / "published" / record["asset_id"])
    assert not staging.exists()  # the dead run's staging was cleaned under the new lease


def _encoders_writing_into(folder: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def test_rerun_on_published_asset_changes_nothing(tmp_path: Path, master: Path) -> None:
    cfg = pipeline_config(tmp_path / "data")
    first = publish(master, cfg)
    asset = cfg.data_dir / "published" / first.asset_id
    before = snapshot(asset)

    again = process(Context.from_config(cfg), master)
    assert again.outcome is Outcome.ALREADY_PUBLISHED and again.asset_id == first.asset_id
    cli = tonearm(cfg.data_dir, "ingest", "--json", str(master))
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0 and json.loads(out)["outcome"] == "already_published", err
    cfg.catalog_path.unlink()  # even with the catalog lost, the published descriptor wins: no re-encode
    for suffix in ("-wal", "-shm"):
        Path(str(cfg.catalog_path) + suffix).unlink(missing_ok=True)
    third = process(Context.from_config(cfg), master)
    assert third.ok and third.asset_id == first.asset_id

    assert snapshot(asset) == before
    assert published_assets(cfg.data_dir) == [first.asset_id]


def test_two_concurrent_ingests_make_one_asset_encoded_once(tmp_path: Path, master: Path) -> None:
    data = tmp_path / "data"
    jobs = [tonearm(data, "-v", "ingest", "--json", str(master)) for _ in range(2)]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err for _, err in results]
    records = [json.loads(out) for out, _ in results]
    assert sorted(r["outcome"] for r in records) == ["already_published", "published"]
    assert len({r["asset_id"] for r in records}) == 1
    logs = "".join(err for _, err in results)
    # -v logs every ffmpeg argv (tonearm.core.ffmpeg): each rung is written by exactly one run, whether the
    # ladder ran in one process or (a lone master: tonearm.app.batch) split across two
    runs = [line for line in logs.splitlines() if "tonearm.core.ffmpeg: run:" in line and "/.encode/" in line]
    for rung in ("aac_256k", "aac_128k", "aac_64k", "opus_96k"):
        assert sum(line.count(f"/.encode/{rung}.mp4 ") for line in runs) == 1, logs
    assert sum("ebur128" in line for line in runs) == 1  # measured once, in the encoder's own run
    assert published_assets(data) == [records[0]["asset_id"]]
    assert Catalog(data / "catalog.sqlite3").count() == 1
