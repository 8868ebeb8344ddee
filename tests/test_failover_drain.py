"""Graceful drain of a real ``tonearm serve`` process: SIGTERM turns /readyz to 503 at once, the origin
keeps accepting for ``[origin] drain_s`` (so a load balancer's check sees it), a response in flight at
the signal completes with every byte, and the process exits 0."""

from __future__ import annotations

import hashlib
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from fixtures_origin import add_big_media, make_ffmpeg_asset
from fixtures_servers import start_origin

pytestmark = pytest.mark.slow


def status_of(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_sigterm_drains_readyz_503_and_in_flight_finishes(tmp_path):
    published = tmp_path / "data" / "published"
    asset = make_ffmpeg_asset(published, "drain")
    big = add_big_media(published, asset, mb=16)
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    origin = start_origin(tmp_path / "data", env={"TONEARM_ORIGIN_DRAIN_S": "1.5", "TONEARM_ORIGIN_CACHE_MB": "0"})
    try:
        assert status_of(origin.base_url + "/readyz") == (200, b"ready\n")
        port = int(origin.base_url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a slow listener: the body stays in flight
        sock.sendall(f"GET /assets/{asset}/single/big.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        header, _, body_start = head.partition(b"\r\n\r\n")
        assert header.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        origin.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        # Draining: still accepting, and saying it is not ready.
        assert status_of(origin.base_url + "/readyz") == (503, b"draining\n")
        assert status_of(origin.base_url + "/healthz")[0] == 200  # alive, just leaving
        time.sleep(2.0)  # past drain_s: it has stopped listening
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert origin.proc.poll() is None, "exited with a response still in flight"
        digest, got = hashlib.sha256(body_start), len(body_start)
        while chunk := sock.recv(1 << 20):
            digest.update(chunk)
            got += len(chunk)
        sock.close()
        assert got == big.stat().st_size and digest.hexdigest() == want  # every byte, the right ones
        assert origin.proc.wait(15) == 0
        assert time.monotonic() - t0 < 15
    finally:
        origin.stop()
    assert "Traceback" not in origin.log(), origin.log()[-2000:]
