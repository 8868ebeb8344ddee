"""``make service`` (tonearm/app/service.py) for real: PostgreSQL, the API, two workers, the watcher, the webhook
sender and the origin start; a master dropped in the printed folder is served by the printed origin; the
printed key works on the API (and no key is 401); a webhook receiver gets the signed published event (secret
from the banner); Ctrl-C stops every process, the database included."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fixtures_intake import Receiver, make_master, sha256, wait_until

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes() or text.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_make_service_runs_the_whole_service_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    from fixtures_pg import pg_available

    if (why := pg_available()) is not None:  # scripts/test-deps.sh installs it: missing is a failure
        pytest.fail(f"PostgreSQL 15 is needed: {why} (run scripts/test-deps.sh)", pytrace=False)
    # not under tmp_path: pytest sets /tmp/pytest-of-<user> back to 0700 whenever another session starts, which
    # locks the postgres user out of a cluster below it mid-run (seen on this shared machine)
    work = Path(tempfile.mkdtemp(prefix="tonearm-service-test-")) / "svc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    rx = Receiver()
    proc = subprocess.Popen([sys.executable, "-m", "tonearm.app.service", "--dir", str(work), "--settle", "0.5",
                             "--webhook", rx.url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 90
        while b"public origin" not in out or not out.rstrip().endswith(b"master.flac'"):
            assert time.monotonic() < deadline and proc.poll() is None, out.decode(errors="replace")
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
        text = out.decode()
        api = re.search(r"management API\s+(http://127\.0\.0\.1:\d+)", text)[1]
        key = re.search(r"API key\s+(tnk_\S+)", text)[1]
        origin = re.search(r"public origin\s+(http://127\.0\.0\.1:\d+)/", text)[1]
        drop = Path(re.search(r"drop folder\s+(\S+)", text)[1])
        rx.secret = re.search(r"signed with (\S+) \(shown once\)", text)[1]
        assert drop == work / "drop" and drop.is_dir()
        assert status(f"{api}/v1/jobs") == 401
        assert status(f"{api}/v1/jobs", {"Authorization": f"Bearer {key}"}) == 200
        master = make_master(tmp_path / "dropped.wav", freq=1200)
        asset = sha256(master)
        os.rename(master, drop / "dropped.wav")
        wait_until(lambda: status(f"{origin}/assets/{asset}/master.m3u8") == 200, 90, "the origin serves the drop")
        wait_until(lambda: (drop / "done" / "dropped.wav").exists(), 20, "moved to done/")
        wait_until(lambda: rx.delivered_ids(), 20, "the published webhook")
        hook = json.loads(rx.hits[0].body)
        assert rx.hits[0].signature_ok and hook["type"] == "published" and hook["asset_id"] == asset
        children = processes_mentioning(str(work))
        assert len(children) >= 7  # api, two workers, watcher, webhooks, origin, postgres
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    wait_until(lambda: not processes_mentioning(str(work)), 20, "every process stopped")
    assert proc.returncode == 0
    rx.close()
    shutil.rmtree(work.parent, ignore_errors=True)
