"""HAProxy on loopback from the shipped template, deploy/haproxy.cfg (one source of truth: the file is
rendered with free ports substituted, never copied).

``plain=True`` renders the negative control from the same file: no health checks, no retries, no
redispatch, no session shutdown, so the failover test can show that the checks and retries are what
absorb the faults.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures_servers import REPO, free_port

HAPROXY = "/usr/sbin/haproxy"
TEMPLATE = REPO / "deploy" / "haproxy.cfg"
# Directives the negative control drops (whole lines, after leading spaces).
PLAIN_DROP = ("retries", "retry-on", "option redispatch", "option httpchk", "http-check", "http-reuse")
PLAIN_DROP_WORDS = re.compile(r"\s(check|on-marked-down shutdown-sessions|slowstart \S+)(?=\s|$)")


def render(template: str, *, listen: str, stats_listen: str, runtime_dir: str, servers: list[tuple[str, str]],
           plain: bool = False) -> str:
    """The template with its {{NAME}}s filled in (comment lines are left as they are)."""
    values = {"LISTEN": listen, "STATS_LISTEN": stats_listen, "RUNTIME_DIR": runtime_dir}
    out = []
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            out.append(line)
            continue
        if stripped == "{{SERVERS}}":
            out.extend(f"    server {name} {addr}" for name, addr in servers)
            continue
        if plain and stripped.startswith(PLAIN_DROP):
            continue
        if plain and stripped.startswith("default-server"):
            line = PLAIN_DROP_WORDS.sub("", line)
        for key, value in values.items():
            line = line.replace("{{" + key + "}}", value)
        if "{{" in line:
            raise ValueError(f"unfilled placeholder in {line!r}")
        out.append(line)
    if plain:
        out.insert(next(i for i, ln in enumerate(out) if ln.startswith("defaults")) + 1, "    retries 0")
    return "\n".join(out) + "\n"


@dataclass
class HAProxy:
    proc: subprocess.Popen
    base_url: str
    stats_url: str
    config: str
    work: Path
    _tmp: Any = field(default=None, repr=False)

    def servers(self) -> dict[str, str]:
        """Server name -> status (UP, DOWN, MAINT, NOLB, "UP 1/2" while rising...) from /stats;csv."""
        with urllib.request.urlopen(self.stats_url + "/stats;csv", timeout=2) as r:
            text = r.read().decode().lstrip("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "origins" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, name: str, want: str, timeout: float = 10.0) -> float:
        """Seconds until server ``name`` has status ``want`` (exactly); TimeoutError otherwise."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.servers().get(name) == want:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise TimeoutError(f"{name} is {self.servers().get(name)}, not {want}, after {timeout}s")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.stats_url + "/metrics", timeout=2) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "HAProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([HAPROXY, "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30)


def start_haproxy(servers: list[tuple[str, str]], *, plain: bool = False, timeout: float = 15.0) -> HAProxy:
    """HAProxy in the foreground (``-db``) on free loopback ports over ``servers`` [(name, host:port)]."""
    tmp = tempfile.TemporaryDirectory(prefix="tonearm-haproxy-")
    work = Path(tmp.name)
    port, stats = free_port(), free_port()
    text = render(TEMPLATE.read_text(), listen=f"127.0.0.1:{port}", stats_listen=f"127.0.0.1:{stats}",
                  runtime_dir=str(work), servers=servers, plain=plain)
    cfg = work / "haproxy.cfg"
    cfg.write_text(text)
    checked = check_config(cfg)
    if checked.returncode != 0:
        tmp.cleanup()
        raise RuntimeError(f"haproxy -c rejected the rendered config: {checked.stdout}{checked.stderr}")
    log = open(work / "haproxy.log", "ab")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=log, start_new_session=True)
    log.close()
    lb = HAProxy(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats}", text, work, tmp)
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = lb.servers()
            if plain or all(s == "UP" for s in states.values()):
                return lb
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = (work / "haproxy.log").read_text(errors="replace")
            lb.stop()
            raise RuntimeError(f"haproxy did not come up: {out[-2000:]}")
        time.sleep(0.05)
