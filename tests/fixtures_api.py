"""Helpers for the management API tests: a real ``tonearm api`` process, keys, configs.

Import explicitly: ``from fixtures_api import ...``.  Fixtures stay in each test module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fixtures_servers import REPO, ServerProcess, free_port, wait_http

from tonearm.app.apikeys import KeyStore
from tonearm.core.config import Config, load

PYTHON = sys.executable


def api_config(data: Path, catalog_url: str = "", **sections: dict[str, Any]) -> Config:
    """A validated config for a data dir (and catalog URL: "" is SQLite under the data dir); no env leaks in."""
    overrides: dict[str, dict[str, Any]] = {"storage": {"root": str(data)}, "catalog": {"url": catalog_url}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load(None, env={}, overrides=overrides)


def make_keys(cfg: Config) -> dict[str, str]:
    """One key per scope set the tests need: name -> key text (and a revoked one)."""
    store = KeyStore(cfg)
    try:
        keys = {name: store.create(scopes, name)[1] for name, scopes in (
            ("ingest", ["ingest"]), ("read", ["read"]), ("admin", ["admin"]), ("ingest_read", ["ingest", "read"]))}
        revoked, text = store.create(["admin"], "revoked")
        store.revoke(revoked.id)
        keys["revoked"] = text
        return keys
    finally:
        store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def start_api(data: Path, *, env: dict[str, str] | None = None, port: int | None = None, timeout: float = 30.0
              ) -> ServerProcess:
    """``tonearm api`` as a subprocess on a free loopback port (its own process group)."""
    tmp = tempfile.TemporaryDirectory(prefix="tonearm-api-")
    work = Path(tmp.name)
    port = port or free_port()
    log_path = work / "api.log"
    argv = [PYTHON, "-m", "tonearm.app.cli", "--data", str(data), "api", "--host", "127.0.0.1", "--port", str(port)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO, start_new_session=True,
                                env={**clean, "PYTHONPATH": str(REPO), **(env or {})})
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", work, log_path, tmp)
    try:
        wait_http(server.base_url + "/healthz", timeout, proc)
        deadline = time.monotonic() + timeout
        while "tonearm api: serving" not in server.log():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API never said it serves")
            time.sleep(0.05)
    except BaseException:
        text = server.log()
        server.stop(signal.SIGKILL)
        raise RuntimeError(f"tonearm api did not start: {text[-2000:]}") from None
    return server


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def tree_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def open_client(cfg: Config, aiohttp_client: Any) -> Any:
    """The API app of ``cfg`` on a loopback test server with the head limits ``tonearm api`` runs with,
    and a client for it (``.keys``: make_keys, ``.cfg``, ``.close_api()`` closes queue and key store)."""
    from aiohttp.test_utils import TestServer

    from tonearm.app.api.server import make_app, runner_args
    from tonearm.app.jobs import open_queue
    from tonearm.core.backends import open_storage

    queue, keys, storage = open_queue(cfg), KeyStore(cfg), open_storage(cfg)
    server = TestServer(make_app(cfg, queue=queue, keys=keys, storage=storage))
    await server.start_server(**runner_args(cfg))
    client = await aiohttp_client(server)
    client.keys, client.cfg = make_keys(cfg), cfg

    def close_api() -> None:
        queue.close()
        keys.close()

    client.close_api = close_api
    return client
