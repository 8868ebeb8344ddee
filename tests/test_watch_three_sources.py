"""The same bytes from a drop folder, a bucket, an API upload (``tonearm api``, a real process) and a direct
submit at once, on a real PostgreSQL with two real workers: one asset, encoded once (one ``published`` event
that did the work, the others ``already_published`` or the same job).  Plus a slowly written file on PostgreSQL: taken only complete.

The S3 server is the ``s3`` fixture (conftest's ``swift_server`` today): change only that fixture's argument
to run against another server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from fixtures_intake import WatchThread, Workers, intake_config, intake_toml, make_master, sha256, wait_until

from tonearm.app.apikeys import KeyStore
from tonearm.app.jobs import open_queue

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(swift_server):  # the one line to change for another S3 server
    return swift_server


class Api:
    """``tonearm api`` as its own process on a free loopback port, with an ingest key."""

    def __init__(self, toml: Path, cfg) -> None:
        from fixtures_pg import free_port

        self.port = free_port()
        store = KeyStore(cfg)
        self.key = store.create(["ingest", "read"], name="three sources")[1]
        store.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "--config", str(toml), "api", "--host",
                                      "127.0.0.1", "--port", str(self.port)], env=env, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(self.base + "/v1/openapi.json", timeout=2):
                    return True
            except OSError:
                assert self.proc.poll() is None, "tonearm api exited"
                return False

        wait_until(up, 30, "tonearm api")

    def upload(self, path: Path, filename: str) -> dict:
        req = urllib.request.Request(f"{self.base}/v1/uploads?filename={filename}", data=path.read_bytes(),
                                     method="POST", headers={"Authorization": f"Bearer {self.key}",
                                                             "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 202
            return json.loads(r.read())["job"]

    def close(self) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)


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
    api = Api(toml, cfg)
    try:
        with Workers(toml, n=2), WatchThread(cfg, [str(drop), f"s3://{bucket}/in/"]) as w:
            barrier = threading.Barrier(4)
            direct: list = []
            uploaded: list = []

            def folder() -> None:
                barrier.wait()
                shutil.copyfile(master, drop / "from-folder.wav")

            def upload() -> None:
                barrier.wait()
                client.upload_file(str(master), bucket, "in/from-bucket.wav")

            def cli() -> None:
                barrier.wait()
                direct.append(q.submit(str(master), filename="from-cli.wav", origin="cli"))

            def api_upload() -> None:
                barrier.wait()
                uploaded.append(api.upload(master, "from-api.wav"))

            threads = [threading.Thread(target=f) for f in (folder, upload, cli, api_upload)]
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
        api.close()
        q.close()
    origins = sorted(j.origin for j in jobs)
    # folder, API and CLI hash before they submit: whichever came first made the job the others joined; the
    # bucket's job learns its hash only when a worker reads the object, and then finds the asset published
    assert set(origins) <= {"cli", "watch", "bucket", "api"} and "bucket" in origins, origins
    assert all(j.state.value == "published" and j.asset_id == want for j in jobs), jobs
    assert direct[0].asset_id == want and uploaded[0]["asset_id"] == want
    assert uploaded[0]["id"] in {j.id for j in jobs}  # the upload's job is one of these
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
