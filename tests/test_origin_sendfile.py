"""Kept files sent by sendfile from the page cache (origin.fastpath, origin.kept), on real files and sockets.

A segment or single file the origin has loaded once keeps its descriptor;
later GETs on the fast path whose bytes the in-memory cache does not hold
send them with ``sendfile(2)`` when ``cachestat(2)`` says every page to send
is resident (bytes it holds go out with the head in one write: cheaper).
So the origins here run with ``cache_mb = 0``: every file is kept, none held.  What the socket does
not take at once goes through the transport, read without blocking; pages
that left the page cache meanwhile are read by the executor.  Every case is
compared byte for byte with the same requests to an origin with the fast path
off, and the sendfile counter in /metrics proves which path ran.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from fixtures_origin import make_ffmpeg_asset
from fixtures_rawhttp import counter, exchange, fast_count, masked, origin_pair, req

import origin.fastpath
from origin.app import ORIGIN, make_app
from origin.linux import Residency
from origin.server import Acceptor, _listen
from tonearm.core.config import Config, OriginConfig, StorageConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("sendfile") / "data"
    asset = make_ffmpeg_asset(data / "published", "sendfile", seconds=90.0)  # a single file of about 1.5 MB
    with origin_pair(data, {"TONEARM_ORIGIN_ACCESS_LOG": "", "TONEARM_ORIGIN_CACHE_MB": "0"}) as (fast, slow):
        yield {"data": data, "asset": asset, "fast": fast, "slow": slow}


def sendfile_count(base: str) -> float:
    return counter(base, "tonearm_http_sendfile_responses_total")


def paths(asset: str) -> dict[str, str]:
    a = f"/assets/{asset}"
    return {"seg": f"{a}/aac_128k/seg-00002.m4s", "init": f"{a}/aac_128k/init.mp4",
            "single": f"{a}/single/aac_128k.mp4"}


def evict(path: Path) -> bool:
    """Drop ``path`` from the page cache; True when cachestat confirms none of it is resident."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return Residency().resident(fd, 0, os.fstat(fd).st_size) is False
    finally:
        os.close(fd)


def test_cachestat_tells_resident_from_evicted(tmp_path):
    """The residency check every sendfile relies on, against the kernel: a file just read is resident,
    the same file after POSIX_FADV_DONTNEED is not, and a range reads only its own pages."""
    res = Residency()
    assert res.available, "cachestat(2) is missing: Linux 6.5 or later is needed for sendfile from kept files"
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(64 * 4096))
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert res.resident(fd, 0, 64 * 4096) is False
        os.pread(fd, 8 * 4096, 16 * 4096)  # pages 16..23 (readahead may bring more)
        assert res.resident(fd, 16 * 4096 + 100, 7 * 4096) is True
        os.pread(fd, 64 * 4096, 0)
        assert res.resident(fd, 0, 64 * 4096) is True
    finally:
        os.close(fd)


def test_kept_files_go_out_by_sendfile_with_aiohttps_bytes(pair):
    """Whole GETs, single ranges into a segment and into a long single file, HEAD and init: after one load,
    each GET body is sent by sendfile, and the byte stream equals the fast-path-off origin's."""
    p = paths(pair["asset"])
    warm = b"".join(req("GET", path) for path in p.values()) + req("GET", p["seg"], close=True)
    for srv in (pair["fast"], pair["slow"]):
        exchange(srv.base_url, warm)
    time.sleep(0.6)
    before = sendfile_count(pair["fast"].base_url)
    raw = (req("GET", p["seg"]) + req("GET", p["seg"], "Range: bytes=100-2099")
           + req("GET", p["single"]) + req("GET", p["single"], "Range: bytes=700000-900000")
           + req("HEAD", p["single"]) + req("GET", p["seg"], "If-None-Match: *")
           + req("GET", p["init"], close=True))
    got_fast = exchange(pair["fast"].base_url, raw)
    got_slow = exchange(pair["slow"].base_url, raw)
    assert masked(got_fast) == masked(got_slow)
    single = (pair["data"] / "published" / p["single"].removeprefix("/assets/")).read_bytes()
    assert single in got_fast and single[700000:900001] in got_fast
    time.sleep(1.2)  # counters reach Prometheus every half second
    assert sendfile_count(pair["fast"].base_url) - before == 5  # 2 segment, 2 single, 1 init GET bodies
    assert sendfile_count(pair["slow"].base_url) == 0


def test_bytes_the_cache_holds_go_out_in_one_write_not_by_sendfile(tmp_path):
    """With the default cache a segment's bytes are held after one load: the fast path writes head and body
    together (one syscall, no cachestat), which measured faster than write + sendfile; same bytes as aiohttp's."""
    data = tmp_path / "data"
    asset = make_ffmpeg_asset(data / "published", "held", seconds=8.0)
    p = paths(asset)
    with origin_pair(data, {"TONEARM_ORIGIN_ACCESS_LOG": ""}) as (fast, slow):
        warm = req("GET", p["seg"]) + req("GET", p["init"], close=True)
        for srv in (fast, slow):
            exchange(srv.base_url, warm)
        time.sleep(0.6)
        before = fast_count(fast.base_url)
        raw = req("GET", p["seg"]) + req("GET", p["seg"], "Range: bytes=100-2099") + req("GET", p["init"], close=True)
        got_fast = exchange(fast.base_url, raw)
        assert masked(got_fast) == masked(exchange(slow.base_url, raw))
        time.sleep(1.2)
        assert fast_count(fast.base_url) - before == 3  # the fast path answered them ...
        assert sendfile_count(fast.base_url) == 0  # ... from the held bytes


def test_a_file_out_of_the_page_cache_is_not_sent_from_the_loop(pair):
    """Evicted after it was kept: sendfile would wait for the disk on the loop, so the fast path hands the
    request to aiohttp's handler, whose executor reads the file."""
    p = paths(pair["asset"])
    seg_file = pair["data"] / "published" / p["seg"].removeprefix("/assets/")
    exchange(pair["fast"].base_url, req("GET", p["seg"], close=True))  # kept
    time.sleep(0.6)
    before, fast_before = sendfile_count(pair["fast"].base_url), fast_count(pair["fast"].base_url)
    assert evict(seg_file), "the kernel kept the file resident after POSIX_FADV_DONTNEED"
    got = exchange(pair["fast"].base_url, req("GET", p["seg"], close=True))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(seg_file.read_bytes())
    time.sleep(1.2)
    assert sendfile_count(pair["fast"].base_url) == before  # not sent by sendfile ...
    assert fast_count(pair["fast"].base_url) == fast_before  # ... nor by the fast path: handed over


def test_a_slow_reader_gets_the_rest_of_a_long_file_through_the_transport(pair):
    """A client with a small receive window and three pipelined GETs (2.9 MB): however much each sendfile
    gets into the socket (all, part, or nothing once it is full), the rest follows through the transport,
    and every response arrives whole and in order."""
    p = paths(pair["asset"])
    exchange(pair["fast"].base_url, req("GET", p["single"], close=True))  # kept
    raw = req("GET", p["single"]) + req("GET", p["seg"]) + req("GET", p["single"], "Range: bytes=5-1000005", close=True)
    outs = []
    for srv in (pair["fast"], pair["slow"]):
        u = urlsplit(srv.base_url)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(20)
        s.connect((u.hostname, u.port))
        with s:
            s.sendall(raw)
            time.sleep(0.5)  # the server meets a full socket
            out = bytearray()
            while chunk := s.recv(4096):
                out += chunk
        outs.append(masked(bytes(out)))
    assert outs[0] == outs[1]
    assert outs[0].count(b"HTTP/1.1 200 OK\r\n") == 2 and outs[0].count(b"HTTP/1.1 206 Partial Content\r\n") == 1


async def test_pages_evicted_between_the_check_and_the_rest_are_read_by_the_executor(tmp_path, monkeypatch):
    """In process, with the non-blocking read of the rest forced to find it evicted (as after a race with
    reclaim): the executor reads the rest, in steps that wait for the slow client, and the client still
    gets every byte, in order."""
    data = tmp_path / "data"
    asset = make_ffmpeg_asset(data / "published", "rest", seconds=90.0)
    single = data / "published" / asset / "single" / "aac_128k.mp4"
    cfg = Config(storage=StorageConfig(root=data), origin=OriginConfig(host="127.0.0.1", port=0, cache_mb=0))
    app = make_app(cfg)  # nothing held: the kept file goes out by sendfile
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    socks = _listen("127.0.0.1", 0, False)
    port = socks[0].getsockname()[1]
    acceptor = Acceptor(loop, socks, runner.server, fast=app[ORIGIN])
    path = f"/assets/{asset}/single/aac_128k.mp4"
    seg = f"/assets/{asset}/aac_128k/seg-00001.m4s"

    def client(raw: bytes, rcvbuf: int | None = None) -> bytes:
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        with s:
            s.sendall(raw)
            time.sleep(0.3)
            out = bytearray()
            while chunk := s.recv(4096):
                out += chunk
        return bytes(out)

    rests: list[int] = []

    def evicted(fd: int, start: int, length: int) -> bytearray | None:
        rests.append(length)
        return None

    made = origin.fastpath.Connection.connection_made

    def small_send_buffer(self: origin.fastpath.Connection, transport: asyncio.Transport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        made(self, transport)  # a fixed small buffer: sendfile of 1.4 MB surely stops part way

    try:
        await asyncio.to_thread(client, req("GET", path, close=True))  # kept
        monkeypatch.setattr(origin.fastpath.Connection, "connection_made", small_send_buffer)
        monkeypatch.setattr(origin.fastpath, "read_resident", evicted)
        got = await asyncio.to_thread(client, req("GET", path) + req("GET", seg, close=True), 4096)
    finally:
        acceptor.close()
        await runner.cleanup()
    body = single.read_bytes()
    first = got.index(body)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and first > 0
    assert got[first + len(body):].startswith(b"HTTP/1.1 200 OK\r\n")
    assert got.endswith((data / "published" / asset / "aac_128k" / "seg-00001.m4s").read_bytes())
    assert rests and 0 < sum(rests) < len(body)  # sendfile sent part; the executor read the rest ...
    assert len(rests) > 1 and max(rests) <= origin.fastpath.REST_STEP  # ... in steps: never the whole file
