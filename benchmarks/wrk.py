"""Driving wrk (loopback only, bounded in time) and reading its results."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procs import run_timed

LUA = Path(__file__).resolve().parent / "lua" / "paths.lua"


@dataclass(frozen=True, kw_only=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3), "rps": round(self.rps, 1),
                "bytes": self.bytes, "errors": self.errors,
                "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()}}


def write_paths(path: Path, entries: list[tuple[str, int]] | list[tuple[str, int, str]]) -> Path:
    """The list the Lua script picks from: one ``<url path> <size> [<Range value>]`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(f) for f in e) + "\n" for e in entries))
    return path


def run_wrk(base: str, paths_file: Path, *, mode: str = "full", connections: int = 64, threads: int = 2,
            duration: float = 10.0, timeout_s: float = 10.0) -> WrkResult:
    """One wrk run against ``base`` (must be a loopback URL)."""
    if not base.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load tests target loopback only, not {base}")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: run scripts/test-deps.sh (installs the Debian wrk package)")
    threads = max(1, min(threads, connections))
    argv = [wrk, "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
            "--timeout", f"{timeout_s:g}s", "-s", str(LUA), base + "/",
            "--", str(paths_file), mode]
    t = run_timed(argv, timeout=duration + timeout_s + 60)
    line = next((ln for ln in t.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {t.stdout[-500:]} {t.stderr[-500:]}")
    raw = json.loads(line[len("WRKJSON "):])
    return WrkResult(requests=raw["requests"], seconds=raw["duration_us"] / 1e6, bytes=raw["bytes"],
                     errors=raw["errors"], latency_ms={k: v / 1000 for k, v in raw["latency_us"].items()})
