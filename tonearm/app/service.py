"""``make service``: the whole ingest service on one machine, on loopback, until Ctrl-C.

Starts, in a work folder (a fresh temp dir, or ``--dir``):

* a throwaway PostgreSQL 15 cluster (``tonearm/app/pgcluster.py``, which the tests use too: initdb and pg_ctl
  as the ``postgres`` user, 127.0.0.1, a free port), holding the catalog, the job queue and webhooks;
* ``tonearm api`` (the management API), ``--workers`` x ``tonearm worker``, ``tonearm watch`` on
  ``<dir>/drop``, ``tonearm webhooks run`` and ``tonearm serve`` (the public origin), each its own
  process group, all sharing one config file (``<dir>/tonearm.toml``) and one data dir;

then prints the URLs, the drop folder and an API key (scopes ingest, read, admin; shown once).  Ctrl-C
(or SIGTERM) stops every process (SIGTERM, then SIGKILL after 20 s: a worker hands back its job), then
the database; the work folder is removed unless ``--dir`` was given.  A child that exits on its own
stops the whole service, with its log's tail printed: a half-running service is worse than none.
Children also get ``PR_SET_PDEATHSIG`` so a ``kill -9`` of this supervisor does not leave them behind.

This is a development and demonstration tool run from a source checkout (it needs ``tests/``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _pg_helpers():
    from tonearm.app import pgcluster

    if (why := pgcluster.pg_available()) is not None:
        raise SystemExit(f"tonearm service: {why}")
    return pgcluster


class Service:
    def __init__(self, work: Path, *, workers: int, settle_s: float, webhook_urls: Sequence[str]) -> None:
        self.work, self.workers, self.settle_s, self.webhook_urls = work, workers, settle_s, list(webhook_urls)
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.cluster = None
        self.drop = work / "drop"
        self.data = work / "data"
        self.api_port, self.origin_port = free_port(), free_port()

    def start(self) -> None:
        pg = _pg_helpers()
        self.cluster = pg.start_cluster(self.work / "pg" / "cluster")
        import psycopg

        with psycopg.connect(self.cluster.url(), autocommit=True) as db:
            db.execute("CREATE DATABASE tonearm")
        self.url = self.cluster.url("tonearm")
        self.webhook_secret = ""
        for d in (self.drop, self.data, self.work / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "tonearm.toml"
        hooks = ""
        if self.webhook_urls:
            import secrets

            self.webhook_secret = secrets.token_urlsafe(32)
            hooks = f'[webhooks]\nurls = {list(self.webhook_urls)!r}\nsecret = "{self.webhook_secret}"\n'.replace("'", '"')
        self.config.write_text(
            f'[storage]\nroot = "{self.data}"\n[catalog]\nurl = "{self.url}"\n'
            f'[watch]\nsettle_s = {self.settle_s}\nafter = "move"\n'
            f'[api]\nhost = "127.0.0.1"\nport = {self.api_port}\n'
            f'[origin]\nhost = "127.0.0.1"\nport = {self.origin_port}\naccess_log = ""\n' + hooks)
        self.key = self._api_key()
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(self.api_port)])
        for i in range(self.workers):
            self._spawn(f"worker{i + 1}", ["worker"])
        self._spawn("watch", ["watch", str(self.drop)])
        self._spawn("webhooks", ["webhooks", "run"])
        self._spawn("origin", ["serve", "--host", "127.0.0.1", "--port", str(self.origin_port)])
        self._wait_http(f"http://127.0.0.1:{self.origin_port}/healthz", "origin")
        self._wait_http(f"http://127.0.0.1:{self.api_port}/v1/openapi.json", "api")

    def _api_key(self) -> str:
        from tonearm.app.apikeys import KeyStore
        from tonearm.core.config import load

        store = KeyStore(load(self.config, env={}))
        try:
            return store.create(["ingest", "read", "admin"], name="make service")[1]
        finally:
            store.close()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.work / "logs" / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
        env["TONEARM_CONFIG"] = str(self.config)
        with open(log, "ab") as out:
            proc = subprocess.Popen([PYTHON, "-m", "tonearm.app.cli", *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=self.work, preexec_fn=_pdeathsig)
        self.procs.append((name, proc, log))

    def _wait_http(self, url: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")

    def check(self) -> None:
        """Raise if a child has exited (with its log's tail)."""
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def banner(self) -> str:
        return "\n".join([
            "", "tonearm service is running (Ctrl-C stops everything):",
            f"  management API  http://127.0.0.1:{self.api_port}/v1/openapi.json",
            f"  API key         {self.key}   (scopes ingest, read, admin; shown once)",
            f"  public origin   http://127.0.0.1:{self.origin_port}/",
            f"  drop folder     {self.drop}   (settle {self.settle_s} s; published files move to done/)",
            f"  PostgreSQL      {self.url}",
            f"  workers         {self.workers}",
            *([f"  webhooks        {', '.join(self.webhook_urls)}, signed with {self.webhook_secret} (shown once)"]
              if self.webhook_urls else []),
            f"  config, logs    {self.config}, {self.work / 'logs'}/",
            "  try:  curl -H 'Authorization: Bearer <key>' --data-binary @master.flac "
            f"'http://127.0.0.1:{self.api_port}/v1/uploads?filename=master.flac'", ""])

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for _, proc, _ in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: an ffmpeg a worker left, too
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(5)
        if self.cluster is not None:
            _pg_helpers().remove_cluster(self.cluster)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tonearm.app.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="work folder to keep (default: a temp dir, removed at exit)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0, help="seconds a dropped file must hold still")
    p.add_argument("--webhook", action="append", default=[], help="a URL to send signed events to")
    args = p.parse_args(argv)
    work = Path(args.dir).absolute() if args.dir else Path(tempfile.mkdtemp(prefix="tonearm-service-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    svc = Service(work, workers=args.workers, settle_s=args.settle, webhook_urls=args.webhook)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        svc.start()
        print(svc.banner(), flush=True)
        while True:
            svc.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\ntonearm service: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"tonearm service: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        svc.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
