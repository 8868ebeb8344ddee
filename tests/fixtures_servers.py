"""Real servers on loopback for tests and benchmarks: nginx and the tonearm origin (Swift: fixtures_swift).

Plain functions return a handle with ``base_url`` (or ``endpoint``) and
``stop()``; each is also a context manager.  Import explicitly::

    from fixtures_servers import start_nginx, start_origin               # from tests/
    from tests.fixtures_servers import start_nginx                       # from the repo root (benchmarks)

Every server runs as a non-daemon subprocess with its own temp directory
(config, pid, logs) and is killed on ``stop()``; nothing listens beyond
127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

NGINX = "/usr/sbin/nginx"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base_url: str
    workdir: Path
    log_path: Path
    _tmp: Any = field(default=None, repr=False)
    _final_log: str | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return ANSI.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp is not None:
            self._final_log = self.log()
            self._tmp.cleanup()
            self._tmp = None
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        application/dash+xml mpd;
        audio/mp4 m4s mp4;
        application/json json;
    }}
    default_type application/octet-stream;
    sendfile on;
    # As deploy/nginx-edge.conf: with tcp_nopush on, every 206 waited ~40 ms on the corked socket.
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    # RFC 9110 13.1.3: not modified when Last-Modified <= If-Modified-Since (nginx's default is exact match).
    if_modified_since before;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location {location} {{
            alias {root}/;
        }}
    }}
}}
"""


def start_nginx(root: str | os.PathLike[str], *, location: str = "/assets/", port: int | None = None,
                timeout: float = 15.0) -> ServerProcess:
    """nginx serving ``root`` at ``location`` (default ``/assets/``, so URLs match the origin's).

    Pass the published directory as ``root``: ``<base_url>/assets/<id>/<file>`` is then the
    same file on nginx and on tonearm.  Returns a handle; ``stop()`` kills it.
    """
    tmp = tempfile.TemporaryDirectory(prefix="tonearm-nginx-")
    work = Path(tmp.name)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir()
    last_err = ""
    for _ in range(5):
        p = port or free_port()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            work=work, port=p, root=Path(root).resolve(), location=location,
            user="user root root;" if os.geteuid() == 0 else "",  # workers must read the test's private tmp dirs
        ))
        log_path = work / "stderr.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
                                    stdout=log, stderr=log, start_new_session=True)
        server = ServerProcess(proc, f"http://127.0.0.1:{p}", work, work / "error.log", tmp)
        try:
            wait_http(server.base_url + "/", timeout, proc)
            return server
        except (RuntimeError, TimeoutError) as exc:
            last_err = f"{exc}; {server.log()[-500:]}"
            proc.kill()
            proc.wait(5)
            if port:
                break
    tmp.cleanup()
    raise RuntimeError(f"nginx did not start: {last_err}")


def start_origin(data_dir: str | os.PathLike[str], *, workers: int = 1, port: int | None = None,
                 env: dict[str, str] | None = None, extra_args: Sequence[str] = (), config: str | None = None,
                 timeout: float = 30.0) -> ServerProcess:
    """``tonearm serve`` as a subprocess; stderr (startup line + JSON access log) goes to ``log()``."""
    tmp = tempfile.TemporaryDirectory(prefix="tonearm-origin-")
    work = Path(tmp.name)
    p = port or free_port()
    log_path = work / "origin.log"
    argv = [PYTHON, "-m", "tonearm.app.cli", "--data", str(data_dir)]
    if config:
        argv += ["--config", config]
    argv += ["serve", "--host", "127.0.0.1", "--port", str(p), "--workers", str(workers), *extra_args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    server = ServerProcess(proc, f"http://127.0.0.1:{p}", work, log_path, tmp)
    try:
        wait_http(server.base_url + "/healthz", timeout, proc)
        deadline = time.monotonic() + timeout
        while "tonearm origin: serving" not in server.log():  # printed once every worker listens
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("origin never reported that all workers listen")
            time.sleep(0.05)
    except BaseException:
        log_text = server.log()
        server.stop(signal.SIGKILL)
        raise RuntimeError(f"origin did not start: {log_text[-2000:]}") from None
    return server
