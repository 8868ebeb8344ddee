"""Raw HTTP/1.1 over plain sockets, for comparing the origin's fast path with aiohttp's byte for byte.

``origin_pair`` starts two real ``tonearm serve`` processes on one data
folder, with the fast path on and off; ``exchange`` sends raw bytes and reads
until the server closes; ``masked`` blanks what differs per response (Date,
X-Request-Id, multipart boundaries).  Used by tests/test_origin_fastpath.py
and tests/test_origin_sendfile.py.
"""

from __future__ import annotations

import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from fixtures_servers import start_origin


@contextmanager
def origin_pair(data: Path, env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """(fast, slow): the same data served with ``fast_path`` on and off; neither may log an error."""
    fast = start_origin(data, env=env)
    slow = start_origin(data, env={**env, "TONEARM_ORIGIN_FAST_PATH": "false"})
    try:
        yield fast, slow
    finally:
        for s in (fast, slow):
            s.stop()
        for s in (fast, slow):
            assert "Traceback" not in s.log() and "ERROR" not in s.log(), s.log()[-3000:]


def exchange(base: str, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``raw`` at once and read until the server closes (the last request says close)."""
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(raw)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(1 << 16)
            if not chunk:
                return bytes(out)
            out += chunk
    raise AssertionError(f"server did not close within {timeout} s; got {bytes(out[:300])!r}")


_MASKS = [
    (re.compile(rb"\r\nDate: [^\r]*"), b"\r\nDate: *"),
    (re.compile(rb"\r\nX-Request-Id: [0-9a-f]+-[0-9a-f]+-[0-9a-f]+"), b"\r\nX-Request-Id: *"),
    (re.compile(rb"boundary=[0-9a-f]{20}"), b"boundary=*"),
    (re.compile(rb"--[0-9a-f]{20}"), b"--*"),
]


def masked(data: bytes) -> bytes:
    for pattern, repl in _MASKS:
        data = pattern.sub(repl, data)
    return data


def counter(base: str, name: str) -> float:
    """A counter's value from the origin's /metrics (0 before its first increment)."""
    text = exchange(base, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def fast_count(base: str) -> float:
    return counter(base, "tonearm_http_fast_path_responses_total")


def req(method: str, path: str, *fields: str, version: str = "1.1", close: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: origin.test", *fields]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
