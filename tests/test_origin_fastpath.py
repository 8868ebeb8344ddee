"""The fast path (origin.fastpath) against aiohttp's path, byte for byte, on real `tonearm serve` processes.

The same raw requests go to an origin with ``fast_path`` on (the default) and
one with it off, over plain sockets; the whole byte streams that come back
must be equal once the per-response Date, generated X-Request-Id and the
per-process multipart boundary are masked.  The fast-path counter in
/metrics proves which requests the fast path answered (so a case that
silently fell back to aiohttp cannot pass as "fast"), and stays 0 with the
fast path off.  tests/test_origin_http_matrix.py compares the same server
against nginx.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures_origin import make_ffmpeg_asset
from fixtures_rawhttp import exchange, fast_count, masked, origin_pair, req
from fixtures_servers import start_origin

from origin.signing import sign

KEY = "fast-path-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("fastpath") / "data"
    asset = make_ffmpeg_asset(data / "published", "fastpath")
    with origin_pair(data, {"TONEARM_ORIGIN_SIGNING_KEY": KEY, "TONEARM_ORIGIN_ACCESS_LOG": ""}) as (fast, slow):
        yield {"data": data, "asset": asset, "fast": fast, "slow": slow}


def cases(asset: str, data: Path) -> list[tuple[str, bytes, int]]:
    """(name, raw bytes, how many of its responses the fast path must send)."""
    a = f"/assets/{asset}"
    seg, init, pl = f"{a}/aac_128k/seg-00001.m4s", f"{a}/aac_128k/init.mp4", f"{a}/aac_128k/index.m3u8"
    st = (data / "published" / asset / "aac_128k" / "seg-00001.m4s").stat()
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    token = sign(KEY, asset, int(time.time()) + 3600)
    bad = sign(KEY, "0" * 64, int(time.time()) + 3600)
    c = lambda *a, **k: req(*a, close=True, **k)  # noqa: E731
    return [
        ("GET segment", c("GET", seg), 1),
        ("HEAD segment", c("HEAD", seg), 1),
        ("GET init", c("GET", init), 1),
        ("GET playlist, gzip", c("GET", pl, "Accept-Encoding: gzip, deflate"), 1),
        ("GET playlist, identity", c("GET", pl, "Accept-Encoding: identity"), 1),
        ("one range", c("GET", seg, "Range: bytes=10-99"), 1),
        ("suffix range", c("GET", seg, "Range: bytes=-100"), 1),
        ("range past the end is clipped", c("GET", seg, "Range: bytes=100-99999999"), 1),
        ("If-None-Match -> 304", c("GET", seg, f"If-None-Match: {etag}"), 1),
        ("If-None-Match other -> 200", c("GET", seg, 'If-None-Match: "nope"'), 1),
        ("If-Modified-Since far future -> 304", c("GET", seg, "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"), 1),
        ("If-Range mismatch -> 200", c("GET", seg, "Range: bytes=0-9", 'If-Range: "other"'), 1),
        ("lower-case names, odd spacing", c("GET", seg, "range:bytes=0-9", "accept-encoding:   gzip  "), 1),
        ("own X-Request-Id", c("GET", seg, "X-Request-Id: abc.DEF-123"), 1),
        ("bad X-Request-Id is replaced", c("GET", seg, "X-Request-Id: <script>"), 1),
        ("Origin header", c("GET", seg, "Origin: https://player.example"), 1),
        ("signed URL", c("GET", f"/s/{token}{seg}"), 1),
        ("HTTP/1.0 closes", req("GET", seg, version="1.0"), 1),
        ("HTTP/1.0 keep-alive then close", req("GET", seg, "Connection: keep-alive", version="1.0")
         + req("GET", init, version="1.0"), 2),
        ("pipelined, fast then aiohttp then fast", req("GET", seg) + req("GET", seg, "Range: bytes=0-1,5-6")
         + c("GET", init), 1),
        ("pipelined keep-alive", req("GET", seg) + req("HEAD", init) + req("GET", pl) + c("GET", seg), 4),
        # Each of these is aiohttp's to answer, and must still come out the same.
        ("missing file on the fast path's miss", c("GET", f"{a}/aac_128k/seg-09999.m4s"), 1),
        ("unknown asset", c("GET", f"/assets/{'f' * 64}/aac_128k/seg-00001.m4s"), 1),
        ("several ranges", c("GET", seg, "Range: bytes=0-1,5-6"), 0),
        ("unsatisfiable range", c("GET", seg, "Range: bytes=99999999-"), 0),
        ("If-Match fails -> 412", c("GET", seg, 'If-Match: "nope"'), 0),
        ("bad signature", c("GET", f"/s/{bad}{seg}"), 0),
        ("percent-encoded path", c("GET", seg.replace("seg-", "seg%2D")), 0),
        ("query string", c("GET", seg + "?x=1"), 0),
        ("duplicate Range", c("GET", seg, "Range: bytes=0-1", "Range: bytes=2-3"), 0),
        ("GET with a body length", c("GET", seg, "Content-Length: 0"), 0),
        ("Expect", c("GET", seg, "Expect: 100-continue"), 0),
        ("absolute-form target", c("GET", f"http://origin.test{seg}"), 0),
        ("obs-fold header", c("GET", seg, "X-A: 1", " folded"), 0),
        ("POST", c("POST", seg, "Content-Length: 0"), 0),
        ("OPTIONS preflight", c("OPTIONS", seg, "Origin: https://p.example", "Access-Control-Request-Method: GET"), 0),
        ("dot segment", c("GET", f"{a}/aac_128k/../aac_128k/seg-00001.m4s"), 0),
        ("healthz", c("GET", "/healthz"), 0),
        ("not HTTP", b"HELLO\r\n\r\n", 0),
    ]


def test_the_fast_path_sends_the_bytes_aiohttps_path_sends(pair):
    for name, raw, _ in cases(pair["asset"], pair["data"]):  # warm both caches: the first GETs are misses
        exchange(pair["fast"].base_url, raw)
        exchange(pair["slow"].base_url, raw)
    before = fast_count(pair["fast"].base_url)
    expected_fast = 0
    for name, raw, fast_n in cases(pair["asset"], pair["data"]):
        got_fast = masked(exchange(pair["fast"].base_url, raw))
        got_slow = masked(exchange(pair["slow"].base_url, raw))
        assert got_fast, name
        assert got_fast == got_slow, f"{name}:\nfast {got_fast[:600]!r}\nslow {got_slow[:600]!r}"
        expected_fast += fast_n
    time.sleep(1.2)  # the counters reach Prometheus every half second
    assert fast_count(pair["fast"].base_url) - before == expected_fast
    assert fast_count(pair["slow"].base_url) == 0


def test_a_cold_miss_is_answered_by_the_fast_path(tmp_path):
    """The first request for each file loads it through the source and is still answered fast (no hand-over)."""
    data = tmp_path / "data"
    asset = make_ffmpeg_asset(data / "published", "cold")
    srv = start_origin(data, env={"TONEARM_ORIGIN_ACCESS_LOG": ""})
    try:
        seg = f"/assets/{asset}/aac_128k/seg-00001.m4s"
        init = f"/assets/{asset}/aac_128k/init.mp4"
        body = exchange(srv.base_url, req("GET", seg) + req("GET", init) + req("GET", seg, close=True))
        assert body.count(b"HTTP/1.1 200 OK\r\n") == 3
        on_disk = (data / "published" / asset / "aac_128k" / "seg-00001.m4s").read_bytes()
        assert on_disk in body
        time.sleep(1.2)
        assert fast_count(srv.base_url) == 3
    finally:
        srv.stop()
        assert "Traceback" not in srv.log(), srv.log()[-3000:]


def test_the_fast_path_holds_back_while_a_client_does_not_read(pair):
    """Many pipelined GETs from a client that does not read: only what fits the transport's buffer is
    answered until the client reads; then every response arrives whole."""
    u = urlsplit(pair["fast"].base_url)
    seg = f"/assets/{pair['asset']}/aac_128k/seg-00001.m4s"
    n = 2000  # 220 KB of requests (reading pauses past MAX_PENDING) for 2000 responses: more than the kernel holds
    raw = req("GET", seg) * (n - 1) + req("GET", seg, close=True)
    size = (pair["data"] / "published" / pair["asset"] / "aac_128k" / "seg-00001.m4s").stat().st_size
    exchange(pair["fast"].base_url, req("GET", seg, close=True))  # cached
    time.sleep(0.6)
    before = fast_count(pair["fast"].base_url)
    with socket.create_connection((u.hostname, u.port), timeout=20) as s:
        sender = threading.Thread(target=s.sendall, args=(raw,), daemon=True)  # may block: the server stops reading
        sender.start()
        time.sleep(1.2)  # nothing read yet
        answered_unread = fast_count(pair["fast"].base_url) - before
        got = 0
        while chunk := s.recv(1 << 16):
            got += len(chunk)
        sender.join(5)
    assert got > n * size  # every response arrived, bodies whole
    # Without holding back, all 2000 would be answered (and queued in memory) within the pause.
    assert answered_unread < n / 2, f"{answered_unread} responses queued for a client that read nothing"
