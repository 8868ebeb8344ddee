"""Workers under faults, on a real PostgreSQL with real ``tonearm worker`` processes: kill -9 mid-encode,
a poison job, cancellation reaching ffmpeg, the same bytes submitted at once, PostgreSQL restarting."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from fixtures_queue import pool, setup  # noqa: F401, F811 - fixtures, requested by name
from fixtures_queue import Workers, descendants, ffmpeg_processes, make_master, wait_for

from tonearm.app.jobs import JobState, open_queue

# real worker processes and whole-pipeline runs: make test, not make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _job_processes(marker: str, *, busy: bool = False) -> list[int]:
    """The job processes (python -m tonearm.app.tasks) of this test's workers; ``busy``: only those
    running a job (they have started an ffmpeg), not a worker's spare waiting for one."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if b"tonearm.app.tasks" in cmd and marker.encode() in env and (not busy or _on_a_job(int(entry), marker)):
                found.append(int(entry))
    return found


def _on_a_job(pid: int, marker: str) -> bool:
    """The job process has started an ffmpeg on this test's files (a spare only probes ffmpeg -version)."""
    for child in descendants(pid):
        try:
            if marker.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def test_kill_9_of_a_worker_mid_encode_leaves_no_ffmpeg_and_another_worker_finishes(
        setup: tuple, pool: Workers, tmp_path: Path) -> None:
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    job = queue.submit(str(make_master(tmp_path / "long.flac", seconds=30)))
    first = pool.start()
    encoder = wait_for(lambda: queue.get(job.id).state is JobState.TRANSCODING and ffmpeg_processes(marker), 90,
                       "the first worker's encoder")[0]
    assert encoder in descendants(first.pid)
    second = pool.start()
    killed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not ffmpeg_processes(marker) or None, 5, "the killed worker's ffmpeg to die")
    assert not _job_processes(marker) or all(p in descendants(second.pid) for p in _job_processes(marker))
    done = queue.wait([job.id], timeout=120)[0]
    took = time.monotonic() - killed_at
    assert done.state is JobState.PUBLISHED, (done.state, done.error_code, done.error_message)
    assert done.attempts == 2  # one run killed, one that published
    row = queue.db.run(lambda db: db.execute("SELECT worker, deaths FROM tonearm_jobs WHERE id=%s",
                                             (job.id,)).fetchone())
    assert row[0].endswith(f":{second.pid}") and row[1] == 1
    assert took < cfg.jobs.stalled_s + 60, took  # stall detection plus one run of the job
    print(f"kill -9 mid-encode: published by the other worker {took:.1f} s after the kill")
    assert [e.type for e in queue.events_since(0)] == ["published"]  # published once


def test_a_job_whose_process_dies_every_time_fails_as_poison(setup: tuple, pool: Workers, tmp_path: Path) -> None:
    """The job's process is SIGKILLed each time it starts (as the OOM killer would): after [jobs]
    max_deaths (3) deaths the job fails with code 'poison' and is not run again; the worker survives."""
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    job = queue.submit(str(make_master(tmp_path / "poison.flac", seconds=3)))
    worker = pool.start()
    stop = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not stop.is_set():
            for pid in _job_processes(marker, busy=True):
                if pid not in kills:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        done = queue.wait([job.id], timeout=150)[0]
    finally:
        stop.set()
        t.join()
    assert done.state is JobState.FAILED and done.error_code == "poison", (done.state, done.error_code)
    assert "died 3 times" in done.error_message
    assert len(kills) == cfg.jobs.max_deaths == 3
    assert worker.poll() is None  # the worker itself is fine and takes the next job
    ok = queue.submit(str(make_master(tmp_path / "fine.flac", seconds=2, freq=880)))
    assert queue.wait([ok.id], timeout=90)[0].state is JobState.PUBLISHED
    assert [e.type for e in queue.events_since(0)] == ["failed", "published"]


def test_cancellation_reaches_a_running_ffmpeg_within_seconds(setup: tuple, pool: Workers, tmp_path: Path) -> None:
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    waiting = queue.submit(str(make_master(tmp_path / "queued.flac", seconds=2, freq=660)), priority=-10)
    assert queue.cancel(waiting.id).state is JobState.CANCELLED  # never started: cancelled at once
    job = queue.submit(str(make_master(tmp_path / "long.flac", seconds=30)))
    pool.start()
    wait_for(lambda: queue.get(job.id).state is JobState.TRANSCODING and ffmpeg_processes(marker), 90,
             "the job's encoder")
    # ffmpeg's -progress, per rendition, reaches the job row while it encodes
    progress = wait_for(lambda: (p := queue.get(job.id).progress) and min(p.values()) > 0 and p, 30, "progress")
    assert set(progress) == {"aac_64k", "opus_96k"} and all(0 < v <= 1 for v in progress.values()), progress
    t0 = time.monotonic()
    queue.cancel(job.id)
    wait_for(lambda: not ffmpeg_processes(marker) or None, 10, "ffmpeg to be killed")
    gone = time.monotonic() - t0
    done = queue.wait([job.id], timeout=10)[0]
    assert done.state is JobState.CANCELLED and gone < 3.0, (done.state, gone)
    print(f"cancellation: ffmpeg gone {gone:.2f} s after cancel()")
    assert not (tmp_path / "data" / "published").exists() or not any((tmp_path / "data" / "published").rglob("*.m3u8"))
    assert queue.get(waiting.id).state is JobState.CANCELLED and queue.get(waiting.id).attempts == 0


def test_the_same_bytes_submitted_three_times_at_once_become_one_job_encoded_once(
        setup: tuple, pool: Workers, tmp_path: Path) -> None:
    cfg, _env, queue = setup
    master = make_master(tmp_path / "a.flac", seconds=3)
    copies = [master] + [Path(shutil.copy(master, tmp_path / f"copy{i}.flac")) for i in range(2)]
    barrier = threading.Barrier(3)
    results: list = [None] * 3

    def submit(i: int) -> None:
        q = open_queue(cfg)  # three clients, three connections
        barrier.wait(10)
        results[i] = q.submit(str(copies[i]), origin=("cli", "watch", "api")[i])
        q.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len({j.id for j in results}) == 1 and len({j.asset_id for j in results}) == 1
    pool.start()
    pool.start()
    done = queue.wait([results[0].id], timeout=90)[0]
    assert done.state is JobState.PUBLISHED and done.attempts == 1
    assert len(queue.list()) == 1 and [e.type for e in queue.events_since(0)] == ["published"]
    again = queue.submit(str(copies[1]))  # after publication: done at once, no work
    assert again.state is JobState.PUBLISHED and again.attempts == 0 and again.asset_id == done.asset_id
    assert len(list((tmp_path / "data").rglob("aac_64k.mp4"))) + len(list((tmp_path / "data").rglob("*.m4s"))) > 0


def test_failover_postgres_restart_while_workers_run_loses_no_job(
        setup: tuple, pool: Workers, pg_cluster, tmp_path: Path) -> None:
    """PostgreSQL restarts (every connection cut, 2 s down) while two workers are mid-job: every job
    ends published, none twice, and the workers reconnect and take new jobs."""
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    jobs = [queue.submit(str(make_master(tmp_path / f"m{i}.flac", seconds=8, freq=300 + 50 * i))) for i in range(3)]
    procs = [pool.start(), pool.start()]
    wait_for(lambda: ffmpeg_processes(marker), 90, "a worker encoding")
    pg_cluster.restart(down_s=2.0)
    done = queue.wait([j.id for j in jobs], timeout=150)
    assert [j.state for j in done] == [JobState.PUBLISHED] * 3, [(j.state, j.error_code, j.error_message) for j in done]
    assert all(p.poll() is None for p in procs), [pool.log(i)[-2000:] for i in range(2)]
    events = [e for e in queue.events_since(0) if e.type == "published"]
    assert sorted(e.asset_id for e in events) == sorted(j.asset_id for j in done)  # once each
    late = queue.submit(str(make_master(tmp_path / "late.flac", seconds=2, freq=990)))
    assert queue.wait([late.id], timeout=90)[0].state is JobState.PUBLISHED


def test_sigterm_hands_a_running_job_back_after_the_drain_time(setup: tuple, pool: Workers, tmp_path: Path) -> None:
    """SIGTERM with --drain 0.5: the worker stops taking jobs, kills the run that did not finish in
    time (no ffmpeg left) and hands the job back (not a death); the next worker publishes it."""
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    # 120 s: the two-rung encode runs at ~15x real time here, so ~8 s, far longer than the poll below
    # plus the 0.5 s drain (a 30 s master could finish inside the drain and publish, which is right)
    job = queue.submit(str(make_master(tmp_path / "long.flac", seconds=120)))
    first = pool.start("--drain", "0.5")
    wait_for(lambda: queue.get(job.id).state is JobState.TRANSCODING and ffmpeg_processes(marker), 90,
             "the job's encoder")
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0
    assert not ffmpeg_processes(marker)
    back = queue.get(job.id)
    assert back.state is JobState.QUEUED and back.error_code == "handed_back"
    pool.start()
    done = queue.wait([job.id], timeout=120)[0]
    assert done.state is JobState.PUBLISHED and done.attempts == 2
    deaths = queue.db.run(lambda db: db.execute("SELECT deaths FROM tonearm_jobs WHERE id=%s", (job.id,)).fetchone())
    assert deaths == (0,)


def test_a_job_in_flight_when_its_bytes_are_taken_down_does_not_publish(
        setup: tuple, pool: Workers, tmp_path: Path) -> None:
    """take_down() while the bytes are being encoded, and nobody cancels the job: the job process looks
    again just before publishing and refuses (asset_taken_down); nothing is published."""
    cfg, _env, queue = setup
    marker = str(tmp_path / "data")
    job = queue.submit(str(make_master(tmp_path / "long.flac", seconds=20)))
    pool.start()
    wait_for(lambda: queue.get(job.id).state is JobState.TRANSCODING and ffmpeg_processes(marker), 90,
             "the job's encoder")
    queue.take_down(job.asset_id)
    done = queue.wait([job.id], timeout=90)[0]
    assert done.state is JobState.FAILED and done.error_code == "asset_taken_down", (done.state, done.error_code)
    assert not any((tmp_path / "data").rglob("asset.json"))  # nothing published
    assert [e.type for e in queue.events_since(0)] == ["taken_down", "failed"]
