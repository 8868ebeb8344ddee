"""The JSON API over a real catalog: pagination, state filter (catalog key), detail, playback URLs.

What a stranger must not get out of it is in tests/test_security_origin_catalog.py.
"""

from __future__ import annotations

import json

import pytest
from fixtures_origin import asset_id_for, make_ffmpeg_asset

from origin.app import make_app
from origin.signing import verify
from tonearm.core.catalog import Catalog
from tonearm.core.config import Config, OriginConfig, StorageConfig
from tonearm.core.model import AssetState

SIGNING_KEY = "api-signing-key-0123456789abcdef0123456789"
CATALOG_KEY = "api-catalog-key-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {CATALOG_KEY}"}


def keyed(data, **origin) -> Config:
    return Config(storage=StorageConfig(root=data),
                  origin=OriginConfig(catalog="key", catalog_key=CATALOG_KEY, **origin))


@pytest.fixture(scope="module")
def catalog_tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("api") / "data"
    played = make_ffmpeg_asset(data / "published", "api")
    cat = Catalog(data / "catalog.sqlite3")
    ids = [asset_id_for(f"api-{i}") for i in range(7)]
    for i, aid in enumerate(ids):
        cat.claim(aid, f"track-{i}.flac")
        cat.set_state(aid, AssetState.PUBLISHED, info={"tags": {"title": f"Track {i}"}, "duration_s": 10.0 + i,
                                                       "loudness": {"integrated_lufs": -14.0 - i}})
    cat.claim(played, "api.flac")
    descriptor = json.loads((data / "published" / played / "asset.json").read_text())
    cat.set_state(played, AssetState.PUBLISHED, info=descriptor)
    failed = asset_id_for("api-failed")
    cat.claim(failed, "broken.flac")
    cat.set_state(failed, AssetState.FAILED, error={"code": "ffmpeg_failed", "message": "boom"})
    return data, ids, played, failed


async def test_list_is_paginated_and_published_only(aiohttp_client, catalog_tree):
    data, ids, played, failed = catalog_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    seen = []
    offset = 0
    while True:
        r = await client.get(f"/api/assets?limit=3&offset={offset}")
        page = await r.json()
        assert r.status == 200 and page["total"] == 8 and page["limit"] == 3
        seen += [item["id"] for item in page["items"]]
        # the list carries what a catalog page shows, so a page needs no request per asset
        assert all("loudness" in item and "renditions" in item for item in page["items"])
        if len(page["items"]) < 3:
            break
        offset += 3
    assert sorted(seen) == sorted(ids + [played]) and failed not in seen
    assert len(set(seen)) == len(seen)


async def test_state_filter(aiohttp_client, catalog_tree):
    """With the catalog key, the whole catalog: any state, master names, error records."""
    data, ids, played, failed = catalog_tree
    client = await aiohttp_client(make_app(keyed(data)))
    page = await (await client.get("/api/assets?state=failed", headers=AUTH)).json()
    assert [i["id"] for i in page["items"]] == [failed] and "playback" not in page["items"][0]
    assert page["items"][0]["source_name"] == "broken.flac"
    page = await (await client.get("/api/assets?state=all&limit=500", headers=AUTH)).json()
    assert page["total"] == 9
    for bad in ("state=bogus", "limit=abc", "offset=-1"):
        assert (await client.get(f"/api/assets?{bad}", headers=AUTH)).status == 400
    fail = await (await client.get(f"/api/assets/{failed}", headers=AUTH)).json()
    assert fail["state"] == "failed" and fail["error"]["code"] == "ffmpeg_failed"


async def test_detail_with_playback_urls(aiohttp_client, catalog_tree):
    data, ids, played, failed = catalog_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))), auto_decompress=False)
    detail = await (await client.get(f"/api/assets/{played}")).json()
    assert detail["state"] == "published"
    assert detail["renditions"][0]["name"] == "aac_128k"
    pb = detail["playback"]
    assert pb["segmented"]["hls"] == f"/assets/{played}/master.m3u8"
    assert pb["segmented"]["dash"] == f"/assets/{played}/manifest.mpd"
    assert pb["single"]["hls"] == f"/assets/{played}/single/master.m3u8"
    assert pb["single"]["dash"] == f"/assets/{played}/single/manifest.mpd"
    for layout in pb.values():
        for url in layout.values():
            r = await client.get(url, headers={"Accept-Encoding": "identity"})
            assert r.status == 200, url
    other = await (await client.get(f"/api/assets/{ids[2]}")).json()
    assert other["loudness"]["integrated_lufs"] == -16.0 and other["title"] == "Track 2"
    assert (await client.get(f"/api/assets/{asset_id_for('unknown')}")).status == 404
    assert (await client.get("/api/assets/not-an-id")).status == 404
    assert (await client.get(f"/api/assets/{failed}")).status == 404  # public: published assets only


async def test_playback_urls_are_signed_for_the_catalog_key_holder(aiohttp_client, catalog_tree):
    data, _, played, _ = catalog_tree
    app = make_app(keyed(data, signing_key=SIGNING_KEY, require_signed=True))
    client = await aiohttp_client(app, auto_decompress=False)
    detail = await (await client.get(f"/api/assets/{played}", headers=AUTH)).json()
    url = detail["playback"]["segmented"]["hls"]
    assert url.startswith("/s/") and verify(SIGNING_KEY, url.split("/")[2], played)
    assert (await client.get(url)).status == 200
    assert (await client.get(f"/api/assets/{played}")).status == 401  # without the key: nothing
