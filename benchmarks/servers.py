"""The nginx edge of deploy/nginx-edge.conf on loopback, and memory sampling of server processes.

tonearm's origin and the plain-nginx baseline come from ``tests.fixtures_servers``
(the same servers the tests use); this module adds the edge, which renders the
shipped template, and ``RssSampler``, which sums VmRSS over a server's process tree.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from tests.fixtures_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
EDGE_TEMPLATE = ROOT / "deploy" / "nginx-edge.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise RuntimeError("nginx not found: run scripts/test-deps.sh (installs nginx-light)")
    return found


def children(pid: int) -> list[int]:
    """Direct and indirect child processes of ``pid`` (from /proc)."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        by_parent.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_kib(pids: Sequence[int]) -> int:
    """Sum of VmRSS over ``pids`` that still exist, in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


class RssSampler:
    """Samples the summed VmRSS of some processes every ``interval`` seconds in a thread."""

    def __init__(self, pids: Sequence[int], interval: float = 0.25) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._t0, rss_kib(self.pids)))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self._t0, rss_kib(self.pids)))


class Server:
    """A child process serving HTTP on 127.0.0.1:port."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, log_dir: Path, *, ready_path: str = "/", env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        self.wait_ready(ready_path)

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers HTTP: ready
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:]) if self.log_path else ""
        except OSError:
            return ""

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _raise_nofile(n: int) -> None:
    """Raise this process's RLIMIT_NOFILE (hard too, when permitted) so children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), max(hard, n)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def render_edge_config(*, listen: str, origin: str, cache_dir: Path, runtime_dir: Path,
                       worker_processes: str = "1", worker_connections: int = 8192,
                       cache_max_size: str = "2g", template: Path = EDGE_TEMPLATE) -> str:
    """deploy/nginx-edge.conf with its {{NAME}} placeholders filled in."""
    text = template.read_text()
    values = {"LISTEN": listen, "ORIGIN": origin, "CACHE_DIR": str(cache_dir), "RUNTIME_DIR": str(runtime_dir),
              "WORKER_PROCESSES": worker_processes, "WORKER_CONNECTIONS": str(worker_connections),
              "CACHE_MAX_SIZE": cache_max_size}
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = [ln for ln in text.splitlines() if "{{" in ln and not ln.lstrip().startswith("#")]
    if left:
        raise ValueError(f"unfilled placeholder in the edge template: {left[0].strip()}")
    return text


class Edge(Server):
    """The shipped edge configuration in front of an origin."""

    name = "edge"

    def __init__(self, origin_port: int, run_dir: Path, *, workers: str = "1", port: int | None = None) -> None:
        super().__init__(port)
        self.origin_port = origin_port
        self.run_dir = run_dir
        self.workers = workers

    @property
    def access_log(self) -> Path:
        return self.run_dir / "edge-access.log"

    def argv(self) -> list[str]:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (self.run_dir / "cache").mkdir(parents=True)
        conf = self.run_dir / "nginx-edge.conf"
        text = render_edge_config(
            listen=f"127.0.0.1:{self.port}", origin=f"127.0.0.1:{self.origin_port}", cache_dir=self.run_dir / "cache",
            runtime_dir=self.run_dir, worker_processes=self.workers, worker_connections=16384)
        if os.geteuid() == 0:  # workers would drop to nobody and could not enter private temp dirs
            text = "user root root;\n" + text
        conf.write_text(text)
        _raise_nofile(65536)  # the template's worker_rlimit_nofile; nginx inherits the hard limit
        return [nginx_binary(), "-c", str(conf), "-p", str(self.run_dir)]

    def flush_log(self) -> None:
        """nginx writes buffered log lines on USR1 (reopen)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(0.5)
