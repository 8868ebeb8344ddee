"""Real players end to end: a tone master published by the real pipeline, served by a real
``tonearm serve`` subprocess, played by hls.js, dash.js, Shaka and Video.js in Debian's headless
Chromium (driven by ``tests/players/drive.mjs`` through playwright-core).  Import explicitly; the
``player_origin`` fixture (built once per session) is in conftest.py.

The master carries a distinct tone per section, so the page can tell by Web Audio FFT that the
audio heard at a position is the master's audio at that position, whatever the rendition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tonearm.app.pipeline import Context, process
from tonearm.core.config import Config
from tonearm.core.ffmpeg import locate, run
from tonearm.core.storage import DESCRIPTOR

PLAYERS_DIR = Path(__file__).parent / "players"
CHROMIUM = os.environ.get("TONEARM_CHROMIUM", "/usr/bin/chromium")

# (start s, end s, Hz): the first change falls inside the rendition switches, the middle seek
# (duration / 2) lands in the 880 Hz section and the near-end seek in the last one.
TONES: tuple[tuple[float, float, float], ...] = ((0.0, 4.0, 440.0), (4.0, 9.0, 660.0), (9.0, 15.0, 880.0),
                                                (15.0, 21.0, 1320.0))
MASTER_SECONDS = 20.0
TONE_TOLERANCE_HZ = 12.0  # two analyser bins at 48 kHz / 8192


def tone_expr(tones: tuple[tuple[float, float, float], ...] = TONES) -> str:
    """aevalsrc expression: a sine whose frequency steps at each section boundary."""
    freq = str(tones[-1][2])
    for start, end, hz in reversed(tones[:-1]):
        freq = f"if(lt(t,{end}),{hz},{freq})"
    return f"0.5*sin(2*PI*t*{freq})"


def make_tone_master(path: Path, *, title: str, artist: str = "tonearm tests", seconds: float = MASTER_SECONDS) -> Path:
    """A 48 kHz stereo 24-bit FLAC master with one tone per section (same on both channels)."""
    expr = tone_expr()
    ffmpeg = locate().path
    run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"aevalsrc='{expr}|{expr}':s=48000:d={seconds}", "-c:a", "flac", "-sample_fmt", "s32",
         "-metadata", f"title={title}", "-metadata", f"artist={artist}", str(path)], timeout=60)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Origin:
    """A running ``tonearm serve`` over a data dir with published assets."""

    base: str
    data: Path
    assets: dict[str, dict[str, Any]]  # label -> asset descriptor (asset.json) plus "id"

    def url(self, label: str, layout: str, protocol: str) -> str:
        manifests = self.assets[label]["manifests"]
        key = protocol if layout == "segmented" else f"{protocol}_single"
        return f"{self.base}/assets/{self.assets[label]['id']}/{manifests[key]}"

    def published(self, asset_id: str) -> Path:
        return self.data / "published" / asset_id

    def broken_copy(self, label: str, name: str) -> tuple[str, Path]:
        """A copy of a published asset under a new id, for negative controls to damage."""
        fake = hashlib.sha256(f"broken:{name}".encode()).hexdigest()
        dst = self.published(fake)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.published(self.assets[label]["id"]), dst)
        return fake, dst


def ingest(cfg: Config, master: Path) -> dict[str, Any]:
    result = process(Context.from_config(cfg), master)
    assert result.ok, f"pipeline did not publish {master.name}: {result.to_json()}"
    descriptor = json.loads((cfg.data_dir / "published" / result.asset_id / DESCRIPTOR).read_text())
    return {**descriptor, "id": result.asset_id}


def _wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tonearm serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/assets", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"tonearm serve did not answer within {timeout} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_origin(data: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``tonearm --data DATA serve`` on a free loopback port, as ``make run`` starts it; yields its base URL.

    ``env``: extra environment variables (e.g. ``TONEARM_SIGNING_KEY``)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tonearm.app.cli", "--data", str(data), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _check_tools() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM}")
    if not (PLAYERS_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/players/node_modules (npm ci)")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        pytest.fail(f"browser tests need {', '.join(missing)}: run scripts/test-deps.sh", pytrace=False)


def drive(spec: dict[str, Any], tmp_path: Path, *, timeout_s: float = 90.0) -> dict[str, Any]:
    """Run ``node drive.mjs`` on a spec and return its JSON report (see drive.mjs)."""
    _check_tools()
    spec = {"timeoutMs": int(timeout_s * 1000), **spec}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(["node", str(PLAYERS_DIR / "drive.mjs"), str(spec_path)], cwd=PLAYERS_DIR, check=False,
                          capture_output=True, text=True, timeout=timeout_s + 30)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"drive.mjs printed no report (exit {proc.returncode}): {proc.stderr[-3000:]}"
    report = json.loads(lines[-1])
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    return report


ALL_STEPS = ("start", "clock", "decoded", "tone_start", "switch_all", "switch_back", "switch_return",
             "seek_middle", "seek_end", "ended")


def player_options(player: str) -> dict[str, Any]:
    """The scenario options each player is played with everywhere (matrix, lossless, negative controls).

    hls.js skips the return across codecs (its Opus -> AAC defect has a test of its own). Video.js
    (VHS 3.17.5) does not apply a switch back to a rendition it has played before (its own test):
    ``switch_all`` visits every rung once, the other codecs first (a codec change each way), and the
    returns to the first rung are skipped.
    """
    if player == "hls":
        return {"steps": [s for s in ALL_STEPS if s != "switch_return"]}
    if player == "videojs":
        return {"steps": [s for s in ALL_STEPS if s not in ("switch_back", "switch_return")], "revisit": False}
    return {"steps": list(ALL_STEPS)}


def scenario(url: str, player: str, **extra: Any) -> dict[str, Any]:
    return {"mode": "harness", "scenario": {
        "player": player, "url": url, "clockSeconds": 2, "nearEnd": 2.5,
        "tones": [{"start": a, "end": b, "freq": hz} for a, b, hz in TONES], **extra}}


def explain(report: dict[str, Any]) -> str:
    """What a failing assertion should print: the failed step, the player's errors, the browser log."""
    r = report.get("result") or {}
    keep = {k: r.get(k) for k in ("failedStep", "failure", "errors", "notes", "renditions", "switches", "final")}
    keep["steps"] = [s for s in r.get("steps", []) if not s.get("ok")] or [s["name"] for s in r.get("steps", [])]
    keep["driverError"] = report.get("driverError")
    keep["browser"] = report.get("browser")
    return json.dumps(keep, indent=1)[:6000]


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    for s in report["result"]["steps"]:
        if s["name"] == name:
            return s
    raise AssertionError(f"step {name!r} did not run:\n{explain(report)}")
