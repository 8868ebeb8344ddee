"""ffmpeg location and the runners' timeout and cancellation behaviour (real processes)."""

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tonearm.core.ffmpeg import FfmpegError, FfmpegNotFound, FfmpegTimeout, locate, run, run_async


def sleeper(pidfile: Path) -> list[str]:
    """A child that records its pid and then hangs, like a stuck encoder."""
    code = f"import os,time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    return [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def test_locate_finds_a_working_ffmpeg_with_the_ladder_encoders() -> None:
    info = locate()
    assert os.access(info.path, os.X_OK)
    assert info.source in {"system", "TONEARM_FFMPEG", "imageio-ffmpeg", "config"}
    assert not info.missing_encoders, info.missing_encoders


def test_locate_prefers_config_and_reports_what_it_tried(tmp_path: Path) -> None:
    import imageio_ffmpeg

    wheel = imageio_ffmpeg.get_ffmpeg_exe()
    info = locate(wheel)
    assert info.path == wheel and info.source == "config"
    assert "libopus" in info.encoders
    locate.cache_clear()


def test_locate_reports_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import tonearm.core.ffmpeg as mod

    monkeypatch.setattr(mod, "_candidates", lambda configured: [("/nonexistent/ffmpeg", "config")])
    locate.cache_clear()
    with pytest.raises(FfmpegNotFound, match="/nonexistent/ffmpeg"):
        locate("/nonexistent/ffmpeg")
    locate.cache_clear()


def test_nonzero_exit_is_typed_with_stderr() -> None:
    with pytest.raises(FfmpegError) as exc:
        run([locate().path, "-hide_banner", "-i", "/nonexistent/input.wav", "-f", "null", "-"], timeout=30)
    assert exc.value.returncode != 0
    assert "No such file" in exc.value.stderr


def test_timeout_kills_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(FfmpegTimeout) as exc:
        run(sleeper(pidfile), timeout=1)
    assert exc.value.code == "ffmpeg_timeout"
    assert not _alive(int(pidfile.read_text()))


async def test_async_cancel_kills_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(run_async(sleeper(pidfile), timeout=60))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    pid = int(pidfile.read_text())
    assert _alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(pid)


async def test_async_timeout_is_typed_and_kills(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(FfmpegTimeout):
        await run_async(sleeper(pidfile), timeout=1)
    assert not _alive(int(pidfile.read_text()))


def test_child_dies_with_a_killed_worker(tmp_path: Path) -> None:
    """A worker SIGKILLed mid-encode takes its ffmpeg with it (no orphan encoding into staging)."""
    import signal
    import subprocess

    pidfile = tmp_path / "pid"
    worker = subprocess.Popen([
        sys.executable, "-c",
        "import sys; from tonearm.core.ffmpeg import run; run(sys.argv[1:], timeout=60)", *sleeper(pidfile),
    ])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert _alive(child)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
