"""tonearm on a real Swift S3 store, where moto used to stand in: stateless origins, multipart uploads,
takedown deletes and listings, as the object store answers them (ETags of multipart objects, status
codes, listing pages)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures_origin import add_big_media, make_ffmpeg_asset
from fixtures_servers import start_origin

from origin.catalog_view import DescriptorCatalog
from tonearm.core.config import Config, StorageConfig
from tonearm.core.s3storage import S3Storage, object_key

pytestmark = pytest.mark.slow

BUCKET = "tonearm-swift-store"
TAGS = {"one": {"title": "Morning Raga", "artist": "Ärzte Ensemble"}, "two": {"title": "Night", "artist": "Solo"}}


def cfg_for(root: Path, endpoint: str) -> Config:
    return Config(storage=StorageConfig(backend="s3", root=root, s3_bucket=BUCKET, s3_endpoint_url=endpoint))


def env_for(swift) -> dict[str, str]:
    return {**swift.env, "TONEARM_STORAGE_BACKEND": "s3", "TONEARM_STORAGE_S3_BUCKET": BUCKET,
            "TONEARM_STORAGE_S3_ENDPOINT_URL": swift.endpoint, "TONEARM_ORIGIN_ACCESS_LOG": ""}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def store(swift_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swift-store")
    swift_server.client().create_bucket(Bucket=BUCKET)
    local = tmp / "local" / "published"
    publisher = S3Storage(cfg_for(tmp / "publisher", swift_server.endpoint))
    assets = {}
    for i, (name, tags) in enumerate(TAGS.items()):
        aid = make_ffmpeg_asset(local, f"swift-{name}", seconds=4.0, freq=300 + 100 * i)
        d = json.loads((local / aid / "asset.json").read_text())
        (local / aid / "asset.json").write_text(json.dumps({**d, "tags": tags, "published_at": 1_700_000_000 + i}))
        staged = tmp / "publisher" / "staging" / aid
        shutil.copytree(local / aid, staged)
        publisher.publish(aid, staged)
        assets[name] = aid
    dirs = [tmp / "a", tmp / "b"]  # two origins, each with an empty data dir of its own
    for d in dirs:
        d.mkdir()
    with ThreadPoolExecutor(2) as pool:
        origins = list(pool.map(lambda d: start_origin(d, env=env_for(swift_server)), dirs))
    yield {"assets": assets, "local": local, "origins": origins, "dirs": dirs, "tmp": tmp, "publisher": publisher}
    for o in origins:
        o.stop()
        assert "Traceback" not in o.log(), o.log()[-3000:]


def test_two_stateless_origins_serve_the_same_asset_and_catalog(store):
    one = store["assets"]["one"]
    file = (store["local"] / one / "single" / "aac_128k.mp4").read_bytes()
    answers = []
    for o in store["origins"]:
        manifest = get(f"{o.base_url}/assets/{one}/master.m3u8")
        ranged = get(f"{o.base_url}/assets/{one}/single/aac_128k.mp4", {"Range": "bytes=100-4099"})
        catalog = get(f"{o.base_url}/api/assets")
        found = get(f"{o.base_url}/api/assets?q=%C3%A4rzte")  # "ärzte": folded like the SQLite catalog's search
        detail = get(f"{o.base_url}/api/assets/{one}")
        answers.append((manifest, ranged, catalog, found, detail))
    assert answers[0] == answers[1]
    manifest, ranged, catalog, found, detail = answers[0]
    assert manifest == (200, (store["local"] / one / "master.m3u8").read_bytes())
    assert ranged == (206, file[100:4100])
    page = json.loads(catalog[1])
    assert catalog[0] == 200 and page["total"] == 2
    assert [item["id"] for item in page["items"]] == [store["assets"]["one"], store["assets"]["two"]]  # publish order
    assert page["items"][0]["title"] == "Morning Raga" and page["items"][0]["playback"]
    assert [item["id"] for item in json.loads(found[1])["items"]] == [one]
    assert detail[0] == 200 and json.loads(detail[1])["tags"] == TAGS["one"]
    assert get(f"{store['origins'][0].base_url}/api/assets/{'0' * 64}")[0] == 404
    for d in store["dirs"]:  # no local state: no catalog file, nothing published, nothing at all
        assert list(d.iterdir()) == [], list(d.iterdir())


def test_multipart_upload_is_served_by_ranges(store, swift_server):
    """A file over boto3's 8 MiB threshold goes up in parts; Swift's s3api gives it a multipart ETag
    ("<md5>-<parts>") and the origin's If-Match-pinned range reads work on it."""
    tmp, local = store["tmp"], store["local"]
    aid = make_ffmpeg_asset(local, "swift-multipart", seconds=2.0)
    big = add_big_media(local, aid, mb=12).read_bytes()
    staged = tmp / "publisher" / "staging" / aid
    shutil.copytree(local / aid, staged)
    store["publisher"].publish(aid, staged)
    scfg = cfg_for(tmp / "publisher", swift_server.endpoint).storage
    head = swift_server.client().head_object(Bucket=BUCKET, Key=object_key(scfg, aid, "single/big.mp4"))
    assert head["ETag"].strip('"').endswith("-2") and head["ContentLength"] == len(big)
    base = store["origins"][1].base_url
    for a, b in ((0, 999), (8 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 9), (len(big) - 100, len(big) - 1)):
        assert get(f"{base}/assets/{aid}/single/big.mp4", {"Range": f"bytes={a}-{b}"}) == (206, big[a:b + 1])
    status, whole = get(f"{base}/assets/{aid}/single/big.mp4")
    assert status == 200 and whole == big


def test_takedown_delete_and_listing(store, swift_server):
    """Deleting an asset's descriptor takes it down: the origins 404 it within their revalidation
    second, and the descriptor catalog drops it at its next refresh; listings page through prefixes."""
    two = store["assets"]["two"]
    scfg = cfg_for(store["tmp"] / "publisher", swift_server.endpoint).storage
    now = [0.0]
    view = DescriptorCatalog(S3Storage(cfg_for(store["tmp"] / "view", swift_server.endpoint)), ttl=5, recheck=30,
                             clock=lambda: now[0])
    assert view.get(two) is not None and view.count() >= 2
    base = store["origins"][0].base_url
    assert get(f"{base}/assets/{two}/master.m3u8")[0] == 200
    swift_server.client().delete_object(Bucket=BUCKET, Key=object_key(scfg, two, "asset.json"))
    deadline = time.monotonic() + 5
    while get(f"{base}/assets/{two}/master.m3u8")[0] != 404:
        assert time.monotonic() < deadline, "the origin still serves a taken-down asset"
        time.sleep(0.2)
    assert get(f"{base}/assets/{two}/aac_128k/seg-00001.m4s")[0] == 404  # the media too: the gate is gone
    assert view.get(two) is not None  # cached until its ttl ...
    now[0] += 6
    assert view.get(two) is not None  # ... and its folder is still listed (media remain) until the recheck ...
    now[0] += 30
    assert view.get(two) is None and two not in [r.id for r in view.list(limit=500)]  # ... then gone
    names = S3Storage(cfg_for(store["tmp"] / "view", swift_server.endpoint)).list_published(page_size=1)
    assert two not in names and store["assets"]["one"] in names  # its media remain, but it is not an asset
