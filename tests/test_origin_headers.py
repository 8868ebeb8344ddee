"""Headers per kind of file, gzip for manifests, CORS and preflight, request ids, operations endpoints.

The app runs in-process (default asyncio loop, so bodies that are not cached
go through ``loop.sendfile``); clients are aiohttp with automatic
decompression off, so the wire bytes are what is checked.
"""

from __future__ import annotations

import gzip
import re

import msgspec
import pytest
from aiohttp import web
from fixtures_origin import make_ffmpeg_asset

from origin.app import ORIGIN, make_app
from tonearm.core.config import Config, OriginConfig, StorageConfig

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("headers") / "data"
    return data, make_ffmpeg_asset(data / "published", "headers")


def config(data, **origin) -> Config:
    return Config(storage=StorageConfig(root=data), origin=OriginConfig(**{"manifest_ttl": 7, **origin}))


@pytest.fixture
async def client(aiohttp_client, tree):
    return await aiohttp_client(make_app(config(tree[0])), auto_decompress=False)


@pytest.mark.parametrize(("rel", "ctype", "cache"), [
    ("master.m3u8", "application/vnd.apple.mpegurl", "public, max-age=7"),
    ("aac_128k/index.m3u8", "application/vnd.apple.mpegurl", "public, max-age=7"),
    ("single/aac_128k.m3u8", "application/vnd.apple.mpegurl", "public, max-age=7"),
    ("manifest.mpd", "application/dash+xml", "public, max-age=7"),
    ("single/manifest.mpd", "application/dash+xml", "public, max-age=7"),
    ("asset.json", "application/json", "public, max-age=7"),
    ("aac_128k/init.mp4", "audio/mp4", IMMUTABLE),
    ("aac_128k/seg-00001.m4s", "audio/mp4", IMMUTABLE),
    ("single/aac_128k.mp4", "audio/mp4", IMMUTABLE),
])
async def test_type_and_caching_per_kind(client, tree, rel, ctype, cache):
    data, asset = tree
    r = await client.get(f"/assets/{asset}/{rel}", headers={"Accept-Encoding": "identity"})
    body = await r.read()
    assert r.status == 200
    assert r.headers["Content-Type"] == ctype
    assert r.headers["Cache-Control"] == cache
    assert r.headers["Accept-Ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.headers["ETag"])  # strong
    assert r.headers["Last-Modified"].endswith(" GMT")
    assert "Content-Encoding" not in r.headers
    assert body == (data / "published" / asset / rel).read_bytes()


@pytest.mark.parametrize("rel", ["master.m3u8", "manifest.mpd", "asset.json"])
async def test_manifests_are_gzipped_with_their_own_etag(client, tree, rel):
    data, asset = tree
    raw = (data / "published" / asset / rel).read_bytes()
    plain = await client.get(f"/assets/{asset}/{rel}", headers={"Accept-Encoding": "identity"})
    packed = await client.get(f"/assets/{asset}/{rel}", headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"})
    body = await packed.read()
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == raw
    assert int(packed.headers["Content-Length"]) == len(body)
    assert packed.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
    assert packed.headers["ETag"] != plain.headers["ETag"]  # RFC 9110 8.8.3: one tag per representation
    # Each variant's tag revalidates that variant only.
    again = await client.get(f"/assets/{asset}/{rel}", headers={"Accept-Encoding": "gzip",
                                                                 "If-None-Match": packed.headers["ETag"]})
    assert again.status == 304 and again.headers["ETag"] == packed.headers["ETag"]
    assert again.headers["Vary"] == "Accept-Encoding"
    cross = await client.get(f"/assets/{asset}/{rel}", headers={"Accept-Encoding": "identity",
                                                                 "If-None-Match": packed.headers["ETag"]})
    assert cross.status == 200 and await cross.read() == raw


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "deflate", "br"])
async def test_no_gzip_unless_accepted(client, tree, accept):
    data, asset = tree
    r = await client.get(f"/assets/{asset}/master.m3u8", headers={"Accept-Encoding": accept})
    assert "Content-Encoding" not in r.headers
    assert await r.read() == (data / "published" / asset / "master.m3u8").read_bytes()


async def test_ranges_on_a_manifest_address_the_identity_bytes(client, tree):
    data, asset = tree
    raw = (data / "published" / asset / "manifest.mpd").read_bytes()
    r = await client.get(f"/assets/{asset}/manifest.mpd", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert r.status == 206 and "Content-Encoding" not in r.headers
    assert await r.read() == raw[:10]


async def test_segments_are_never_gzipped(client, tree):
    _, asset = tree
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in r.headers and "Vary" not in r.headers


async def test_not_modified_keeps_validators_and_caching(client, tree):
    _, asset = tree
    first = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s")
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s", headers={"If-None-Match": first.headers["ETag"]})
    assert r.status == 304 and await r.read() == b""
    # RFC 9110 15.4.5: the fields a 200 would carry for caches (ETag, Cache-Control, Vary, ...).
    assert r.headers["ETag"] == first.headers["ETag"]
    assert r.headers["Cache-Control"] == IMMUTABLE
    assert r.headers["Last-Modified"] == first.headers["Last-Modified"]
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_on_responses(client, tree):
    _, asset = tree
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s", headers={"Origin": "https://player.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "content-length", "etag", "accept-ranges", "x-request-id"} <= exposed
    missing = await client.get(f"/assets/{asset}/nope.m4s")
    assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == "*"


async def test_preflight_for_range_and_private_network(aiohttp_client, client, tree):
    data, asset = tree
    r = await client.options(f"/assets/{asset}/aac_128k/seg-00001.m4s", headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range", "Access-Control-Request-Private-Network": "true"})
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Private-Network" not in r.headers  # off unless [origin] allow_private_network
    client = await aiohttp_client(make_app(config(data, allow_private_network=True)))
    r = await client.options(f"/assets/{asset}/aac_128k/seg-00001.m4s", headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range", "Access-Control-Request-Private-Network": "true"})
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert set(r.headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"range", "if-none-match", "if-modified-since", "if-range"} <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert r.headers["Access-Control-Allow-Private-Network"] == "true"
    plain = await client.options("/assets/x", headers={"Origin": "https://a.example",
                                                       "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Private-Network" not in plain.headers


async def test_configured_cors_origins(aiohttp_client, tree):
    data, asset = tree
    client = await aiohttp_client(make_app(config(data, cors_origins=("https://ok.example",))))
    good = await client.get(f"/assets/{asset}/master.m3u8", headers={"Origin": "https://ok.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in good.headers["Vary"]
    bad = await client.get(f"/assets/{asset}/master.m3u8", headers={"Origin": "https://evil.example"})
    assert bad.status == 200 and "Access-Control-Allow-Origin" not in bad.headers


async def test_request_id_echoed_or_generated(client, tree):
    _, asset = tree
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    a = await client.get("/healthz")
    b = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert a.headers["X-Request-Id"] != b.headers["X-Request-Id"]
    assert " " not in b.headers["X-Request-Id"]


async def test_methods(client, tree):
    _, asset = tree
    r = await client.post(f"/assets/{asset}/master.m3u8", data=b"x")
    assert r.status == 405 and "GET" in r.headers["Allow"]
    r = await client.delete(f"/assets/{asset}/master.m3u8")
    assert r.status == 405


def samples(exposition: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels as written."""
    out = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_health_ready_metrics(client, tree):
    """The metrics registry is the process's own (origin.observe.METRICS), which every earlier test fed:
    what this test's requests add is read as the difference between a scrape before and one after."""
    data, asset = tree
    seg = data / "published" / asset / "aac_128k" / "seg-00001.m4s"
    before = samples(await (await client.get("/metrics")).text())
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s")
    assert r.status == 200 and await r.read() == seg.read_bytes()
    assert (await client.get("/nowhere")).status == 404
    after = samples(await (await client.get("/metrics")).text())

    def added(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert added('tonearm_http_requests_total{route="media",status="200"}') == 1
    assert added('tonearm_http_requests_total{route="other",status="404"}') == 1
    assert added('tonearm_http_requests_total{route="health",status="200"}') == 2
    assert added('tonearm_http_requests_total{route="metrics",status="200"}') == 1  # the first scrape
    assert added('tonearm_http_response_bytes_total{route="media"}') == seg.stat().st_size
    assert added('tonearm_http_request_duration_seconds_count{route="media"}') == 1
    assert added('tonearm_http_request_duration_seconds_bucket{le="+Inf",route="media"}') == 1
    assert after["tonearm_http_requests_in_flight"] == 1  # sampled during the scrape: the scrape itself


async def test_readyz_fails_without_storage(aiohttp_client, tmp_path):
    app = make_app(config(tmp_path / "nothing-here"))
    client = await aiohttp_client(app)
    assert (await client.get("/readyz")).status == 503


async def test_static_page_and_placeholder(aiohttp_client, tree, tmp_path):
    data, _ = tree
    app = make_app(config(data))
    static = tmp_path / "static"
    app[ORIGIN].local.static_root = static
    client = await aiohttp_client(app, auto_decompress=False)
    r = await client.get("/")
    assert r.status == 200 and "text/html" in r.headers["Content-Type"] and b"tonearm" in await r.read()
    (static / "vendor").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>player</title>" + " " * 400)
    (static / "vendor" / "hls.min.js").write_text("console.log('x');")
    r = await client.get("/", headers={"Accept-Encoding": "identity"})
    assert await r.read() == (static / "index.html").read_bytes()
    r = await client.get("/static/vendor/hls.min.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert (await client.get("/static/vendor/missing.js")).status == 404
    r = await client.get("/static/index.html", headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"


async def test_streamed_bodies_via_sendfile(aiohttp_client, tree):
    """cache_mb = 0: every body comes from the file (loop.sendfile on the default loop)."""
    data, asset = tree
    cfg = config(data)
    cfg = msgspec.structs.replace(cfg, origin=msgspec.structs.replace(cfg.origin, cache_mb=0))
    client = await aiohttp_client(make_app(cfg), auto_decompress=False)
    raw = (data / "published" / asset / "single/aac_128k.mp4").read_bytes()
    r = await client.get(f"/assets/{asset}/single/aac_128k.mp4")
    assert await r.read() == raw
    r = await client.get(f"/assets/{asset}/single/aac_128k.mp4", headers={"Range": "bytes=1000-1999"})
    assert r.status == 206 and await r.read() == raw[1000:2000]
    r = await client.get(f"/assets/{asset}/single/aac_128k.mp4", headers={"Range": "bytes=-10,0-9"})
    body = await r.read()
    assert r.status == 206 and raw[-10:] in body and raw[:10] in body
    assert int(r.headers["Content-Length"]) == len(body)


async def test_app_is_a_plain_aiohttp_application(aiohttp_client, tree):
    """make_app gives a plain aiohttp Application, and a working one: it routes every path to the origin
    built from the given config, which serves that config's published tree with its settings."""
    data, asset = tree
    app = make_app(config(data, manifest_ttl=3))
    assert isinstance(app, web.Application)
    assert app[ORIGIN].cfg.storage.root == data
    client = await aiohttp_client(app, auto_decompress=False)
    r = await client.get(f"/assets/{asset}/master.m3u8", headers={"Accept-Encoding": "identity"})
    assert r.status == 200 and await r.read() == (data / "published" / asset / "master.m3u8").read_bytes()
    assert r.headers["Cache-Control"] == "public, max-age=3"  # this config's manifest_ttl
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s")
    assert r.status == 200 and r.headers["Cache-Control"] == IMMUTABLE
    assert (await client.get("/healthz")).status == 200
    missing = await client.get(f"/assets/{asset}/nope.m4s")
    assert missing.status == 404 and "X-Request-Id" in missing.headers  # the origin's 404, not aiohttp's
