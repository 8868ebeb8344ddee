"""The same bytes from a drop folder, a bucket and a direct submit at once, on a real PostgreSQL with two
real workers: one asset, encoded once (one ``published`` event that did the work, the others
``already_published`` or the same job).  Plus a slowly written file on PostgreSQL: taken only complete.

The S3 server is the ``s3`` fixture (conftest's ``moto_server`` today): change only that fixture's argument
to run against another server.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from fixtures_intake import WatchThread, Workers, intake_config, intake_toml, make_master, sha256, wait_until

from tonearm.app.jobs import open_queue

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(moto_server):  # the one line to change for another S3 server
    return moto_server


def test_three_sources_at_once_become_one_asset_encoded_once(tmp_path: Path, pg_url: str, s3) -> None:
    bucket = f"three-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3.base_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    drop = tmp_path / "drop"
    drop.mkdir()
    master = make_master(tmp_path / "master.wav", freq=880, seconds=4)
    want = sha256(master)
    sections = {"storage": {"s3_endpoint_url": s3.base_url}, "watch": {"settle_s": 0.3, "rescan_s": 0.3}}
    cfg = intake_config(tmp_path / "data", catalog_url=pg_url, **sections)
    toml = intake_toml(tmp_path / "tonearm.toml", tmp_path / "data", catalog_url=pg_url, **sections)
    q = open_queue(cfg)
    try:
        with Workers(toml, n=2), WatchThread(cfg, [str(drop), f"s3://{bucket}/in/"]) as w:
            barrier = threading.Barrier(3)
            direct: list = []

            def folder() -> None:
                barrier.wait()
                shutil.copyfile(master, drop / "from-folder.wav")

            def upload() -> None:
                barrier.wait()
                client.upload_file(str(master), bucket, "in/from-bucket.wav")

            def cli() -> None:
                barrier.wait()
                direct.append(q.submit(str(master), filename="from-cli.wav", origin="cli"))

            threads = [threading.Thread(target=f) for f in (folder, upload, cli)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wait_until(lambda: sum(ln.startswith("taken") for ln in w.lines) >= 2, 60, "both watchers took theirs")
            jobs = wait_until(lambda: (js := q.list(limit=100)) and len(js) >= 2 and all(j.done for j in js) and js,
                              120, "every job finished")
            time.sleep(1.0)  # a late duplicate job would show up now
            jobs = q.list(limit=100)
        events = [e for e in q.events_since(0, 100) if e.type == "published"]
    finally:
        q.close()
    origins = sorted(j.origin for j in jobs)
    assert set(origins) <= {"cli", "watch", "bucket"} and "bucket" in origins, origins
    assert all(j.state.value == "published" and j.asset_id == want for j in jobs), jobs
    assert direct[0].asset_id == want
    worked = [e for e in events if not e.data.get("already_published")]
    assert len(worked) == 1 and worked[0].asset_id == want, "encoded once"
    assert {e.asset_id for e in events} == {want}


def test_a_slow_write_into_the_drop_folder_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    master = make_master(tmp_path / "m.wav", freq=990, seconds=3)
    sections = {"watch": {"settle_s": 1.0, "rescan_s": 0.5}}
    cfg = intake_config(tmp_path / "data", catalog_url=pg_url, **sections)
    toml = intake_toml(tmp_path / "tonearm.toml", tmp_path / "data", catalog_url=pg_url, **sections)
    data = master.read_bytes()
    with Workers(toml, n=1), WatchThread(cfg, [str(drop)]) as w:
        with open(drop / "m.wav", "wb") as f:
            for i in range(0, len(data), len(data) // 8 + 1):  # 8 chunks, 0.6 s apart: 4.8 s in all
                f.write(data[i:i + len(data) // 8 + 1])
                f.flush()
                assert not any(ln.startswith("taken") for ln in w.lines), "taken while still being written"
                time.sleep(0.6)
        wait_until(lambda: any(ln.startswith("taken") for ln in w.lines), 30, "taken")
        q = open_queue(cfg)
        try:
            job = wait_until(lambda: (js := q.list()) and js[0].done and js[0], 120, "the job finished")
        finally:
            q.close()
    assert job.state.value == "published" and job.origin == "watch" and job.asset_id == sha256(master)
