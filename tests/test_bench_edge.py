"""deploy/nginx-edge.conf in front of a real `tonearm serve`: collapsing, ranges, freshness, tokens.

The edge is the shipped template rendered by ``benchmarks.servers.Edge``; the
origin counts what reaches it in its JSON access log, so "each object reaches
the origin once" is read from the origin, not inferred from the edge.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures_origin import add_big_media, make_ffmpeg_asset
from fixtures_servers import start_origin

from benchmarks.servers import Edge, nginx_binary, render_edge_config
from origin.signing import sign

KEY = "edge-test-key-0123456789abcdef0123"
pytestmark = pytest.mark.nginx


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("edge")
    data = root / "data"
    asset = make_ffmpeg_asset(data / "published", "edge", seconds=8.0)
    big = add_big_media(data / "published", asset, mb=3)
    log = root / "origin-access.log"
    env = {"TONEARM_SIGNING_KEY": KEY, "TONEARM_ORIGIN_ACCESS_LOG": str(log)}
    with start_origin(data, env=env) as origin:
        with Edge(int(origin.base_url.rsplit(":", 1)[1]), root / "edge") as edge:
            edge.start(root / "logs", ready_path="/healthz")
            yield {"edge": edge, "asset": asset, "data": data, "big": big, "log": log}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def origin_requests(log: Path, needle: str) -> list[dict]:
    time.sleep(1.0)  # the origin flushes its access log every 0.5 s
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [r for r in recs if needle in r["path"]]


def test_template_is_valid_nginx(tmp_path: Path) -> None:
    conf = tmp_path / "edge.conf"
    (tmp_path / "cache").mkdir()
    conf.write_text(render_edge_config(listen="127.0.0.1:1", origin="127.0.0.1:2", cache_dir=tmp_path / "cache",
                                       runtime_dir=tmp_path))
    p = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert "{{" not in "".join(ln for ln in conf.read_text().splitlines() if not ln.lstrip().startswith("#"))


def test_concurrent_misses_reach_origin_once(stack: dict) -> None:
    edge, asset = stack["edge"], stack["asset"]
    path = f"/assets/{asset}/aac_128k/seg-00002.m4s"
    expected = (stack["data"] / "published" / asset / "aac_128k" / "seg-00002.m4s").read_bytes()
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: get(edge.base + path), range(40)))
    assert all(status == 200 and body == expected for status, _, body in answers)
    assert len(origin_requests(stack["log"], path)) == 1


def test_ranges_are_exact_and_fetched_in_slices(stack: dict) -> None:
    edge, asset, big = stack["edge"], stack["asset"], stack["big"]
    data = big.read_bytes()
    path = f"/assets/{asset}/single/big.mp4"
    # RFC 9110 14.1.2: a range across the 1 MiB slice boundary, a suffix range, an open-ended range.
    for rng, lo, hi in (("bytes=1048000-1049999", 1048000, 1049999), ("bytes=-100", len(data) - 100, len(data) - 1),
                        (f"bytes={len(data) - 10}-", len(data) - 10, len(data) - 1)):
        status, headers, body = get(edge.base + path, {"Range": rng})
        assert status == 206, rng
        assert headers["Content-Range"] == f"bytes {lo}-{hi}/{len(data)}"
        assert body == data[lo:hi + 1]
    status, _, body = get(edge.base + path)
    assert status == 200 and body == data
    fetched = origin_requests(stack["log"], path)
    slices = sorted(r.get("range", "") for r in fetched)
    # 3 MiB = 3 slices of 1 MiB, each fetched once, whatever the clients asked for.
    assert slices == ["bytes=0-1048575", "bytes=1048576-2097151", "bytes=2097152-3145727"]


def test_origin_cache_control_is_passed_through(stack: dict) -> None:
    edge, asset = stack["edge"], stack["asset"]
    _, seg, _ = get(edge.base + f"/assets/{asset}/aac_128k/seg-00001.m4s")
    assert "immutable" in seg["Cache-Control"]
    _, manifest, _ = get(edge.base + f"/assets/{asset}/aac_128k/index.m3u8")
    assert manifest["Cache-Control"] == "public, max-age=10"  # [origin] manifest_ttl default


def test_signed_urls_share_cache_but_tokens_are_checked(stack: dict) -> None:
    edge, asset = stack["edge"], stack["asset"]
    rel = f"/assets/{asset}/aac_128k/seg-00003.m4s"
    good = [sign(KEY, asset, int(time.time()) + 600 + i) for i in range(3)]
    for token in good:  # three listeners, three tokens: one cached object
        status, headers, _ = get(edge.base + f"/s/{token}{rel}")
        assert status == 200
    assert len(origin_requests(stack["log"], rel)) == 1
    forged = f"{int(time.time()) + 600}.{'A' * 43}"
    expired = sign(KEY, asset, int(time.time()) - 5)
    for token in (forged, expired):
        status, _, body = get(edge.base + f"/s/{token}{rel}")
        assert status == 403, token  # the cached object is not served without a valid token
        assert not body.startswith(b"\x00\x00")
