"""The origin over S3-compatible storage: a real OpenStack Swift with s3api on loopback.

The same range/conditional matrix as against nginx is run on an origin that
reads from S3 and one that reads the same bytes from disk: answers must be
identical.  Swift's proxy access log proves ranges are passed through: media
objects are only ever fetched with a Range (206), never whole.
"""

from __future__ import annotations

import shutil
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import msgspec
import pytest
from fixtures_origin import make_ffmpeg_asset
from fixtures_servers import start_origin
from fixtures_swift import s3_requests, start_swift
from test_origin_http_matrix import CASES, check_bytes, fill, parse_multipart, request

from origin.app import ORIGIN, make_app
from tonearm.core.config import Config, StorageConfig
from tonearm.core.s3storage import S3Storage, object_key
from tonearm.core.storage import DESCRIPTOR, publish_order

BUCKET = "tonearm-test"

# Slow (make test, not make test-fast): a Swift cluster and `tonearm serve` processes over disk and S3.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swift(swift_server):
    """The session's Swift (conftest.py), with this module's own bucket."""
    swift_server.client().create_bucket(Bucket=BUCKET)
    return swift_server


def s3_config(root: Path, endpoint: str) -> Config:
    return Config(storage=StorageConfig(backend="s3", root=root, s3_bucket=BUCKET, s3_endpoint_url=endpoint,
                                        s3_prefix="media/"))


def s3_env(endpoint: str) -> dict[str, str]:
    return {"TONEARM_STORAGE_BACKEND": "s3", "TONEARM_STORAGE_S3_BUCKET": BUCKET,
            "TONEARM_STORAGE_S3_ENDPOINT_URL": endpoint, "TONEARM_STORAGE_S3_PREFIX": "media/"}


@pytest.fixture(scope="module")
def published(swift, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("s3")
    local = tmp / "local"
    asset = make_ffmpeg_asset(local / "published", "s3")
    staged = tmp / "s3root" / "staging" / "copy"
    shutil.copytree(local / "published" / asset, staged)
    log_before = len(swift.log())
    S3Storage(s3_config(tmp / "s3root", swift.endpoint)).publish(asset, staged)
    prefix = f"/{BUCKET}/media/published/{asset}/"
    files = sum(1 for p in (local / "published" / asset).rglob("*") if p.is_file())
    deadline = time.monotonic() + 5
    while True:  # the access log comes over UDP, a little after the responses
        puts = [path[len(prefix):] for method, path, status in s3_requests(swift.log()[log_before:])
                if method == "PUT" and path.startswith(prefix) and status == 200]
        if len(puts) >= files or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    origins = {"local": start_origin(local), "s3": start_origin(tmp / "s3root", env=s3_env(swift.endpoint))}
    yield {"asset": asset, "local_root": local, "s3root": tmp / "s3root", "puts": puts, **origins}
    for o in origins.values():
        o.stop()
        assert "Traceback" not in o.log() and "ERROR" not in o.log(), o.log()[-3000:]


def test_publish_uploads_descriptor_last(published):
    puts = published["puts"]
    files = sorted(p.relative_to(published["local_root"] / "published" / published["asset"]).as_posix()
                   for p in (published["local_root"] / "published" / published["asset"]).rglob("*") if p.is_file())
    assert sorted(puts) == files
    assert puts == publish_order(files)
    assert puts[-1] == DESCRIPTOR
    first_manifest = min(i for i, p in enumerate(puts) if p.endswith((".m3u8", ".mpd")))
    assert all(p.endswith((".m4s", ".mp4")) for p in puts[:first_manifest])
    assert not (published["s3root"] / "staging" / "copy").exists()  # the staged copy is cleaned up


def test_storage_reads_back(published, swift):
    store = S3Storage(s3_config(published["s3root"], swift.endpoint))
    assert store.is_published(published["asset"])
    assert store.read_descriptor(published["asset"])["source_name"] == "s3.flac"
    missing = "0" * 64
    assert not store.is_published(missing) and store.read_descriptor(missing) is None


MEDIA = ["aac_128k/seg-00002.m4s", "single/aac_128k.mp4"]


@pytest.mark.parametrize("rel", MEDIA + ["master.m3u8"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_answers_as_local_disk(published, rel, case):
    _, method, template = case
    path = f"/assets/{published['asset']}/{rel}"
    file = (published["local_root"] / "published" / published["asset"] / rel).read_bytes()
    answers = {}
    for name in ("local", "s3"):
        base = published[name].base_url
        head = request(base, "HEAD", path, {})[1]
        mtime = parsedate_to_datetime(head["last-modified"]).timestamp()
        answers[name] = request(base, method, path, fill(template, length=len(file), etag=head["etag"], mtime=mtime))
    (l_status, l_headers, l_body), (s_status, s_headers, s_body) = answers["local"], answers["s3"]
    assert s_status == l_status
    assert s_headers.get("content-range") == l_headers.get("content-range")
    assert s_headers.get("cache-control") == l_headers.get("cache-control")
    if s_status in (200, 206):
        assert s_headers["content-length"] == l_headers["content-length"]
        assert s_headers["content-type"].split(";")[0] == l_headers["content-type"].split(";")[0]
        check_bytes(file, s_status, s_headers, s_body, method)
        if s_status == 206 and "content-range" not in s_headers and method == "GET":
            assert parse_multipart(s_headers["content-type"], s_body) == \
                parse_multipart(l_headers["content-type"], l_body)


def wait_for_log(swift, before: int, count: int) -> list[tuple[str, str, int]]:
    """The store's access lines after offset ``before``, once ``count`` have arrived (UDP: they lag a little)."""
    deadline = time.monotonic() + 5
    while len(got := s3_requests(swift.log()[before:])) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_ranges_are_passed_to_the_object_store(published, swift):
    asset = published["asset"]
    before = len(swift.log())
    key = f"/{BUCKET}/media/published/{asset}/single/aac_128k.mp4"
    status, headers, body = request(published["s3"].base_url, "GET", f"/assets/{asset}/single/aac_128k.mp4",
                                    {"Range": "bytes=1000-1999"})
    assert status == 206 and len(body) == 1000
    gets = [code for method, path, code in wait_for_log(swift, before, 1) if method == "GET" and path == key]
    assert gets == [206]
    # Over the whole module, media objects were only ever fetched by range, never whole.
    media_gets = [(path, code) for method, path, code in s3_requests(swift.log())
                  if method == "GET" and path.startswith(f"/{BUCKET}/media/published/")
                  and path.endswith((".m4s", ".mp4"))]
    assert media_gets and all(code == 206 for path, code in media_gets if not path.endswith("init.mp4"))


def test_unpublished_objects_are_404(published, swift):
    client = swift.client()
    scfg = s3_config(published["s3root"], swift.endpoint).storage
    half = "f" * 64
    client.put_object(Bucket=BUCKET, Key=object_key(scfg, half, "aac_128k/seg-00001.m4s"), Body=b"secret")
    client.put_object(Bucket=BUCKET, Key=object_key(scfg, half, "master.m3u8"), Body=b"#EXTM3U\n")
    for rel in ("aac_128k/seg-00001.m4s", "master.m3u8", "asset.json"):
        status, _, body = request(published["s3"].base_url, "GET", f"/assets/{half}/{rel}", {})
        assert status == 404 and b"secret" not in body


async def test_readyz_reflects_the_bucket(aiohttp_client, swift, tmp_path):
    good = await aiohttp_client(make_app(s3_config(tmp_path, swift.endpoint)))
    assert (await good.get("/readyz")).status == 200
    cfg = s3_config(tmp_path, swift.endpoint)
    cfg = Config(storage=msgspec.structs.replace(cfg.storage, s3_bucket="no-such-bucket"))
    bad = await aiohttp_client(make_app(cfg))
    assert (await bad.get("/readyz")).status == 503


async def test_storage_failures_are_502_or_a_cut_connection(aiohttp_client, swift_server, tmp_path):
    """Object store down before the response: 502.  Down after the headers went out: the body is cut.
    A Swift of its own, whose proxy is stopped: the session's store stays up for the other tests."""
    import aiohttp

    store = start_swift(tmp_path)
    try:
        store.client().create_bucket(Bucket=BUCKET)
        local = tmp_path / "local"
        asset = make_ffmpeg_asset(local / "published", "s3-failure")
        S3Storage(s3_config(tmp_path / "root", store.endpoint)).publish(asset, local / "published" / asset)
        app = make_app(s3_config(tmp_path / "root", store.endpoint))
        app[ORIGIN].source.revalidate_s = 3600  # keep the cached validators whatever the timing
        client = await aiohttp_client(app)
        seg = f"/assets/{asset}/single/aac_128k.mp4"
        head = await client.head(seg)  # validators now cached; no body fetched yet
        assert head.status == 200
    finally:
        store.stop()
    r = await client.get(seg)  # headers from the cache, body from a store that is gone
    assert r.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await r.read()
    r = await client.get(f"/assets/{asset}/aac_128k/seg-00003.m4s")  # nothing cached: fails before headers
    assert r.status == 502
