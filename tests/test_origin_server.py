"""``tonearm serve``: several workers on one port, metrics summed across them, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from fixtures_origin import add_big_media, make_ffmpeg_asset
from fixtures_servers import start_origin
from test_origin_load import fetch

# Slow (make test, not make test-fast): multi-worker `tonearm serve` processes, 300-request rounds and SIGTERM
# drains, about 15 s.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("serve") / "data"
    asset = make_ffmpeg_asset(data / "published", "serve")
    big = add_big_media(data / "published", asset, mb=32)
    return data, asset, big


def workers_of(pid: int) -> list[int]:
    """Worker processes of a ``tonearm serve`` parent (multiprocessing's resource tracker excluded)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                out.append(int(child))
    return out


def test_workers_share_the_port_and_the_metrics(tree):
    data, asset, _ = tree
    server = start_origin(data, workers=2)
    try:
        workers = workers_of(server.pid)
        assert len(workers) == 2
        path = f"/assets/{asset}/aac_128k/seg-00001.m4s"

        async def many() -> list[tuple[int, int]]:
            return await asyncio.gather(*(fetch(server.base_url, path) for _ in range(300)))

        assert all(status == 200 for status, _ in asyncio.run(many()))
        deadline = time.monotonic() + 10
        while server.log().count(path) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)  # the access log is flushed twice a second
        seen = set()
        for line in server.log().splitlines():
            m = re.search(r'"id":"([0-9a-f]+)-', line)
            if m and path in line:
                seen.add(int(m.group(1), 16))  # request ids start with the worker's pid
        assert seen == set(workers)  # the kernel spread connections over both processes
        metrics = asyncio.run(_get(server.base_url, "/metrics"))
        m = re.search(r'tonearm_http_requests_total\{route="media",status="200"\} ([0-9.e+]+)', metrics)
        assert m and float(m.group(1)) >= 300  # summed over both workers, whichever one answered
    finally:
        assert server.stop() == 0


async def _get(base: str, path: str) -> str:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.decode(errors="replace")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(tree, workers):
    data, asset, big = tree
    server = start_origin(data, workers=workers)
    size = big.stat().st_size

    async def slow_download_then_term() -> tuple[int, int]:
        host, port = "127.0.0.1", int(server.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection(host, port, limit=262144)
        writer.write(f"GET /assets/{asset}/single/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")  # the response is under way
        got = len(await reader.read(65536))
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:  # soon no new connection is accepted ...
            await asyncio.sleep(0.1)
            try:
                socket.create_connection((host, port), timeout=2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        while chunk := await reader.read(262144):  # ... but the body in flight is finished
            got += len(chunk)
            await asyncio.sleep(0.01)
        writer.close()
        return int(head.split(b" ", 2)[1]), got

    status, got = asyncio.run(slow_download_then_term())
    assert status == 200 and got == size  # the in-flight body was finished, not cut
    deadline = time.monotonic() + 30
    while server.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.proc.returncode == 0
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
