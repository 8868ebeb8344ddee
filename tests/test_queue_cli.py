"""The command line on a shared catalog: ingest --wait, tonearm jobs, jobs cancel, the worker's
metrics, and priorities (new releases before back-catalogue), with a real worker and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fixtures_pg import free_port
from fixtures_queue import ROOT, make_master, queue_setup, wait_for, workers

from tonearm.app.jobs import PRIORITY_BACK_CATALOGUE, PRIORITY_NEW_RELEASE, JobState, open_queue

# real worker processes and whole-pipeline runs: make test, not make test-fast
pytestmark = pytest.mark.slow


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tonearm ARGS`` run in this process (main(), as the console script runs it) with ``env`` set."""
    import contextlib
    import io

    from tonearm.app.cli import main

    saved = {k: os.environ.get(k) for k in env}
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def test_cli_metrics_and_priorities_on_a_shared_catalog(tmp_path: Path, pg_url: str) -> None:
    cfg, env = queue_setup(tmp_path, pg_url)
    queue = open_queue(cfg)
    back = [queue.submit(str(make_master(tmp_path / f"old{i}.flac", seconds=2, freq=200 + 40 * i)),
                         priority=PRIORITY_BACK_CATALOGUE) for i in range(2)]
    new = queue.submit(str(make_master(tmp_path / "new.flac", seconds=2, freq=900)), priority=PRIORITY_NEW_RELEASE)
    doomed = queue.submit(str(make_master(tmp_path / "doomed.flac", seconds=2, freq=950)), priority=-50)
    listed = json.loads(_cli(env, "jobs", "--json", "--state", "queued").stdout.splitlines()[0])
    assert listed["state"] == "queued"
    cancel = _cli(env, "jobs", "cancel", doomed.id, "--json")
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["state"] == "cancelled"
    assert _cli(env, "jobs", "cancel", "no-such-job").returncode == 1

    port = free_port()
    for pool in workers(env, tmp_path):
        pool.start("--concurrency", "1", "--metrics-port", str(port))
        watch = subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "jobs", "watch", "--until-idle",
                                  "--force-bars", "--interval", "0.2"], env={**os.environ, **env}, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        (tmp_path / "junk.flac").write_bytes(b"not audio at all" * 100)
        ingest = _cli(env, "ingest", "--wait", "--timeout", "100", str(make_master(tmp_path / "cli.flac", seconds=2,
                                                                                    freq=1200)), str(tmp_path / "junk.flac"))
        assert ingest.returncode == 1, ingest.stderr  # one quarantined
        assert "published: cli.flac ->" in ingest.stdout and "quarantined: junk.flac" in ingest.stderr
        done = queue.wait([j.id for j in [*back, new]], timeout=100)
        assert all(j.state is JobState.PUBLISHED for j in done)
        started = dict(queue.db.run(lambda db: db.execute("SELECT id, started_at FROM tonearm_jobs").fetchall()))
        assert started[new.id] < min(started[j.id] for j in back)  # the new release ran first
        text = wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode(),
                        10, "the worker's metrics")
        assert 'tonearm_jobs{state="published"} 4.0' in text and 'tonearm_jobs{state="cancelled"} 1.0' in text
        assert 'tonearm_jobs{state="quarantined"} 1.0' in text
        assert "tonearm_workers_live 1.0" in text
        assert 'tonearm_job_seconds_count{outcome="published"}' in text
        assert 'tonearm_job_failures_total{code=' in text  # the quarantined junk
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0
        assert "%|" in err and ("transcoding" in err or "validating" in err)  # bars drawn while the jobs ran
        assert sum(" published " in line for line in out.splitlines()) >= 3  # each job once, as it finished
        lines = _cli(env, "jobs").stdout.splitlines()
        assert len(lines) == 6 and sum("published" in line for line in lines) == 4
    queue.close()
