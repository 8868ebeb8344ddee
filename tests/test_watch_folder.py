"""Drop folders through the real queue, workers and pipeline (PostgreSQL, one ``tonearm worker``): temporary
names are never taken, files dropped while the watcher was down are found at start, nothing is taken twice,
and the after-take policies (a rejected file is never deleted).  The slowly written file is in
test_watch_three_sources.py; its negative control is here."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fixtures_intake import Workers, intake_config, intake_toml, make_master, sha256

from tonearm.app.jobs import open_queue
from tonearm.app.watch import run_watch, state_path
from tonearm.app.watch_ledger import Ledger

pytestmark = pytest.mark.slow


def setup(tmp_path: Path, pg_url: str, **watch):
    """A config on the test's PostgreSQL database, and its TOML file for the worker processes."""
    sections = {"watch": {"settle_s": 0.3, "rescan_s": 0.3, **watch}}
    return (intake_config(tmp_path / "data", catalog_url=pg_url, **sections),
            intake_toml(tmp_path / "tonearm.toml", tmp_path / "data", catalog_url=pg_url, **sections))


def jobs_of(cfg) -> list:
    """Every job, once all have ended (with PostgreSQL and ``after = leave`` a watcher only enqueues)."""
    q = open_queue(cfg)
    try:
        return q.wait([j.id for j in q.list(limit=1000)], timeout=120)
    finally:
        q.close()


def slow_copy(src: Path, dest: Path, *, chunks: int, pause: float) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with open(dest, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


def test_control_with_no_settle_window_a_growing_file_is_taken_early(tmp_path: Path) -> None:
    """Negative control for the test above: with a window shorter than the writer's pauses the rule fires
    mid-write, so the test above can fail."""
    from tonearm.app.watch_folder import Settler, scan_folder

    drop = tmp_path / "drop"
    drop.mkdir()
    master = make_master(tmp_path / "m.wav", freq=450, seconds=2)
    settler = Settler(0.05)
    taken_sizes: list[int] = []
    writer = threading.Thread(target=slow_copy, args=(master, drop / "m.wav"), kwargs={"chunks": 6, "pause": 0.3})
    writer.start()
    while writer.is_alive():
        taken_sizes += [s.size for s in settler.observe(scan_folder(drop, patterns=(), max_depth=1))]
        time.sleep(0.1)
    assert taken_sizes and min(taken_sizes) < master.stat().st_size


def test_temporary_names_restart_and_never_twice(tmp_path: Path, pg_url: str) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg, toml = setup(tmp_path, pg_url, after="leave")
    with Workers(toml, n=2):
        names_restart_and_never_twice(cfg, drop)


def names_restart_and_never_twice(cfg, drop: Path) -> None:
    a = make_master(drop / "a.wav", freq=500)
    # the others need no encode to show what is taken (they are quarantined at once when they are)
    (drop / "b.wav.part").write_bytes(b"still downloading " * 64)
    (drop / ".c.wav").write_bytes(b"hidden " * 64)
    (drop / "d.tmp").write_bytes(b"temporary " * 64)
    run_watch(cfg, [str(drop)], once=True, report=lambda ln: None)
    assert [j.asset_id for j in jobs_of(cfg)] == [sha256(a)]
    # dropped while the watcher is down: found by the rescan at start; a.wav (unchanged) is not taken again
    (drop / "b.wav.part").rename(drop / "b.wav")
    e = drop / "e.wav"
    e.write_bytes(b"dropped while the watcher was down " * 64)
    lines: list[str] = []
    run_watch(cfg, [str(drop)], once=True, report=lines.append)
    assert sorted(ln.split()[1] for ln in lines if ln.startswith("taken")) == sorted([str(drop / "b.wav"),
                                                                                     str(e)])
    assert {j.asset_id for j in jobs_of(cfg)} == {sha256(a), sha256(drop / "b.wav"), sha256(e)}
    assert len(jobs_of(cfg)) == 3
    # the same bytes under another name: a new take, but the queue's content addressing gives no new asset work
    # (and a hostile name: a newline and a terminal escape reach job rows and reports escaped, on one line)
    hostile = "again\n\x1b[31m.wav"
    (drop / hostile).write_bytes(a.read_bytes())
    lines.clear()
    run_watch(cfg, [str(drop)], once=True, report=lines.append)
    again = [j for j in jobs_of(cfg) if j.filename.startswith("again")]
    assert len(again) == 1 and again[0].asset_id == sha256(a) and again[0].state.value == "published"
    assert again[0].filename == "again\\n\\x1b[31m.wav"
    assert lines and all("\n" not in ln and "\x1b" not in ln for ln in lines)
    ledger = Ledger(state_path(cfg))
    assert len(ledger.all(str(drop))) == 4
    ledger.close()


@pytest.mark.parametrize("policy", ["move", "delete"])
def test_after_take_policies_and_a_rejected_file_is_never_deleted(tmp_path: Path, pg_url: str, policy: str) -> None:
    drop = tmp_path / "drop"
    (drop / "sub").mkdir(parents=True)
    cfg, toml = setup(tmp_path, pg_url, after=policy)
    with Workers(toml, n=1):
        policies(cfg, drop, policy)


def policies(cfg, drop: Path, policy: str) -> None:
    good = make_master(drop / "sub" / "good.wav", freq=600 if policy == "move" else 610)
    good_id = sha256(good)
    bad = drop / "bad.wav"
    bad.write_bytes(b"RIFF but not really a wave file" * 50)
    run_watch(cfg, [str(drop)], once=True, report=lambda ln: None)
    states = {j.filename: j.state.value for j in jobs_of(cfg)}
    assert states == {"good.wav": "published", "bad.wav": "quarantined"}
    if policy == "move":
        assert not good.exists() and sha256(drop / "sub" / "done" / "good.wav") == good_id
        assert not bad.exists() and (drop / "rejected" / "bad.wav").exists()
    else:
        assert not good.exists() and not (drop / "sub" / "done").exists()
        assert bad.exists(), "a rejected file is never deleted"
    # nothing in done/ or rejected/ is taken again
    run_watch(cfg, [str(drop)], once=True, report=lambda ln: None)
    assert len(jobs_of(cfg)) == 2


def test_with_sqlite_the_watcher_runs_the_jobs_itself(tmp_path: Path) -> None:
    """The embedded mode: no server, no worker; ``tonearm watch --once`` publishes in its own pool."""
    import subprocess
    import sys

    drop = tmp_path / "drop"
    drop.mkdir()
    m = make_master(drop / "local.wav", freq=640)
    toml = intake_toml(tmp_path / "tonearm.toml", tmp_path / "data", watch={"settle_s": 0.3, "after": "move"})
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TONEARM_")}
    out = subprocess.run([sys.executable, "-m", "tonearm.app.cli", "--config", str(toml), "watch", "--once", str(drop)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"published: {drop / 'local.wav'} -> {sha256(drop / 'done' / 'local.wav')}" in out.stdout
    assert not m.exists()
    assert (tmp_path / "data" / "published" / sha256(drop / "done" / "local.wav") / "asset.json").exists()


@pytest.mark.long  # ~9 s: beyond this make test budget; runs in make bench
def test_a_database_outage_delays_a_drop_but_loses_nothing(tmp_path: Path, pg_cluster, pg_url: str) -> None:
    """PostgreSQL stopped while a file settles: the watcher's submits fail and are retried each pass (the file
    is not marked taken), and once the server is back the file is taken and published."""
    from fixtures_intake import WatchThread, wait_until

    drop = tmp_path / "drop"
    drop.mkdir()
    cfg, toml = setup(tmp_path, pg_url, after="move")
    with WatchThread(cfg, [str(drop)]) as w:
        pg_cluster.stop()
        try:
            m = make_master(drop / "during.wav", freq=655)
            want = sha256(m)
            time.sleep(2.0)  # settled long ago: the watcher has tried to submit and failed
            assert not any(ln.startswith("taken") for ln in w.lines)
        finally:
            pg_cluster.start()
        with Workers(toml, n=1):
            wait_until(lambda: any(ln.startswith("published") for ln in w.lines), 60, "published after the outage")
    assert (drop / "done" / "during.wav").exists() and sha256(drop / "done" / "during.wav") == want
    assert [j.asset_id for j in jobs_of(cfg)] == [want]
