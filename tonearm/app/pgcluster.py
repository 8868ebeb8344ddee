"""A throwaway PostgreSQL 15 cluster for the tests: real server, loopback, a temp dir, a non-root user.

PostgreSQL refuses to run as root (and the tests run as root in CI), so ``initdb`` and ``pg_ctl`` run
as the ``postgres`` user via ``runuser``; the data dir and the socket dir are in a temp dir it owns.
The server listens on 127.0.0.1 on a free port, with fsync off (a test cluster never survives a power
cut).  One cluster per session; each test gets a fresh database cloned from an empty template
(``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.  ``restart()`` stops the
server (``-m fast``: connections are cut) and starts it again on the same port, for failover tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("TONEARM_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
TEMPLATE = "tonearm_template"


def pg_available() -> str | None:
    """None if a cluster can be started here, else why not (the fixture skips with that reason)."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries in {PG_BIN}: run scripts/test-deps.sh (apt-get install postgresql)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user to run PostgreSQL as: apt-get install postgresql creates it"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg(argv: list[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    proc = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


@dataclass
class PgCluster:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sock"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        pw = pwd.getpwnam(PG_USER)
        for p in (self.root, self.sockets):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        # a parent dir only root can enter would stop the postgres user: open the path down to root
        for parent in self.root.parents:
            if parent == Path("/") or not parent.exists():
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o011)
        _as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                "--no-sync", "--locale=C"], timeout=120)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = "
                       f"'{self.sockets}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 200\nshared_buffers = 32MB\n")

    def start(self) -> None:
        _as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                "-t", "60", "start"], timeout=90)

    def stop(self, mode: str = "fast") -> None:
        _as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
               timeout=90, check=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (cutting every connection), stay down ``down_s`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def psql(self, sql: str, db: str = "postgres") -> str:
        proc = _as_pg([str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", db, "-At", "-c", sql])
        return proc.stdout

    def new_database(self) -> str:
        """A fresh, empty database cloned from the template; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_cluster(root: Path) -> PgCluster:
    cluster = PgCluster(root=root, port=free_port())
    cluster.init()
    cluster.start()
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {TEMPLATE}")
    return cluster


def remove_cluster(cluster: PgCluster) -> None:
    cluster.stop("immediate")
    shutil.rmtree(cluster.root.parent if cluster.root.parent.name.startswith("tonearm-pg-") else cluster.root,
                  ignore_errors=True)
