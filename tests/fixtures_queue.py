"""Helpers for the queue and worker tests: short masters, a small ladder, real ``tonearm worker``
processes on a real PostgreSQL (``pg_url``), and what /proc says about the ffmpeg they started.
Import explicitly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tonearm.core.config import Config, load

ROOT = Path(__file__).resolve().parent.parent
SMALL_LADDER = """
[ladder]
layouts = ["segmented"]
rungs = [{name = "aac_64k", codec = "aac", bitrate = 64000}, {name = "opus_96k", codec = "opus", bitrate = 96000}]
"""
# Fast failure detection so a test waits seconds, not the production minutes.
FAST_JOBS = {"heartbeat_s": 0.5, "stalled_s": 3.0, "poll_s": 0.2, "retry_base_s": 0.2}


def make_master(path: Path, *, seconds: float, freq: float = 440.0) -> Path:
    """A stereo FLAC sine (distinct bytes per frequency), generated like the pipeline fixtures' masters."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=f={freq}:d={seconds}:r=44100", "-ac", "2", "-c:a", "flac", str(path)],
                   check=True, timeout=120)
    return path


def queue_setup(tmp: Path, url: str, **jobs: Any) -> tuple[Config, dict[str, str]]:
    """A config on the shared catalog ``url`` and the environment giving workers the same one."""
    toml = tmp / "tonearm.toml"
    toml.write_text(SMALL_LADDER)
    settings = {**FAST_JOBS, **jobs}
    env = {"TONEARM_CONFIG": str(toml), "TONEARM_DATA": str(tmp / "data"), "TONEARM_CATALOG_URL": url,
           **{f"TONEARM_JOBS_{k.upper()}": str(v) for k, v in settings.items()}}
    return load(None, env=env), env


class Workers:
    """``tonearm worker`` processes, each in a session of its own; all killed (with their groups) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "worker", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # a job process left in the group, if any
            except ProcessLookupError:
                pass

    def log(self, i: int) -> str:
        return (self.logs / f"worker{i}.log").read_text(errors="replace")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def ffmpeg_processes(marker: str) -> list[int]:
    """Live ffmpeg processes whose command line mentions ``marker`` (a test's own data dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"ffmpeg") and state != "Z" and any(marker.encode() in c for c in cmd):
                found.append(int(entry))
    return found


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def workers(env: dict[str, str], logs: Path) -> Iterator[Workers]:
    w = Workers(env, logs)
    try:
        yield w
    finally:
        w.stop_all()


@pytest.fixture
def setup(tmp_path: Path, pg_url: str) -> Iterator[tuple]:
    """(config, worker environment, queue) on this test's PostgreSQL database; the queue closed after."""
    from tonearm.app.jobs import open_queue

    cfg, env = queue_setup(tmp_path, pg_url)
    queue = open_queue(cfg)
    yield cfg, env, queue
    queue.close()


@pytest.fixture
def pool(setup: tuple, tmp_path: Path) -> Iterator[Workers]:
    """Real ``tonearm worker`` processes on ``setup``'s queue, stopped after the test."""
    yield from workers(setup[1], tmp_path)
