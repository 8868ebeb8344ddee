"""The JSON API over a real catalog: pagination, state filter (catalog key), detail, playback URLs,
search (``?q=`` on title and artist) and how fast a page and a search are with thousands of assets.

What a stranger must not get out of it is in tests/test_security_origin_catalog.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import statistics
import time
from contextlib import closing

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


# -- search: ?q= on title and artist ----------------------------------------------------------------------------------

SEARCHABLE = [  # (title, artist, master file name)
    ("Blue in Green", "Miles Davis", "secret-master-one.flac"),
    ("Schrei nach Liebe", "Die Ärzte", "two.flac"),
    ("100% Pure_Love", "Crystal Waters", "three.flac"),
    ("So What", "Miles Davis", "four.flac"),
    ("Back\\slash blues", "The Escapes", "five.flac"),
    ("Eel", "Straße", "six.flac"),
]


@pytest.fixture(scope="module")
def search_tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("search") / "data"
    cat = Catalog(data / "catalog.sqlite3")
    for i, (title, artist, name) in enumerate(SEARCHABLE):
        aid = asset_id_for(f"search-{i}")
        cat.claim(aid, name)
        cat.set_state(aid, AssetState.PUBLISHED, info={"tags": {"title": title, "artist": artist}})
    hidden = asset_id_for("search-validated")  # in progress: its tags are known, it is not published
    cat.claim(hidden, "hidden.flac")
    cat.set_state(hidden, AssetState.VALIDATED, info={"tags": {"title": "Blue Unreleased", "artist": "Miles Davis"}})
    untagged = asset_id_for("search-untagged")
    cat.claim(untagged, "blue-untagged.flac")
    cat.set_state(untagged, AssetState.PUBLISHED, info={"duration_s": 1.0})
    return data


async def _titles(client, query: str, headers: dict[str, str] | None = None) -> tuple[list[str | None], dict]:
    r = await client.get(f"/api/assets?{query}", headers=headers or {})
    assert r.status == 200, (query, await r.text())
    page = await r.json()
    return [i["title"] for i in page["items"]], page


async def test_search_matches_title_or_artist_case_insensitively(aiohttp_client, search_tree):
    data = search_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    titles, page = await _titles(client, "q=blue")
    assert titles == ["Blue in Green", "Back\\slash blues"] and page["total"] == 2 and page["q"] == "blue"
    assert (await _titles(client, "q=MILES%20davis"))[0] == ["Blue in Green", "So What"]  # artist, any case
    assert (await _titles(client, "q=%C3%84RZTE"))[0] == ["Schrei nach Liebe"]  # "ÄRZTE": Unicode case folding
    assert (await _titles(client, "q=strasse"))[0] == ["Eel"]  # casefold: ß ~ ss
    assert (await _titles(client, "q=%20%20so%20what%20"))[0] == ["So What"]  # surrounding spaces dropped
    _, everything = await _titles(client, "q=")
    assert everything["total"] == len(SEARCHABLE) + 1 and everything["q"] == ""  # an empty search is the list
    assert (await _titles(client, "q=nothing-like-it"))[1]["total"] == 0


async def test_search_treats_like_wildcards_literally(aiohttp_client, search_tree):
    data = search_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    assert (await _titles(client, "q=%25"))[0] == ["100% Pure_Love"]  # "%"
    assert (await _titles(client, "q=_"))[0] == ["100% Pure_Love"]  # "_" is no single-character wildcard
    assert (await _titles(client, "q=e_l"))[0] == ["100% Pure_Love"]  # and not "Eel", as a wildcard would
    assert (await _titles(client, "q=%5C"))[0] == ["Back\\slash blues"]  # the escape character itself
    assert (await _titles(client, "q=k%5Cs"))[0] == ["Back\\slash blues"]


async def test_search_pages_like_the_list(aiohttp_client, search_tree):
    data = search_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    seen = []
    for offset in range(3):
        titles, page = await _titles(client, f"q=miles&limit=1&offset={offset}")
        assert page["total"] == 2 and page["limit"] == 1 and page["offset"] == offset
        seen += titles
    assert seen == ["Blue in Green", "So What"]  # then an empty page: the list's own order and paging


async def test_search_bounds(aiohttp_client, search_tree):
    data = search_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    assert (await client.get("/api/assets?q=" + "a" * 100)).status == 200
    for bad in ("a" * 101, "bl%00ue", "bl%0Aue", "%1B%5B31m"):
        r = await client.get(f"/api/assets?q={bad}")
        assert r.status == 400, bad
        assert bad not in await r.text()  # the refusal does not echo the query


async def test_search_finds_published_assets_only_and_never_by_file_name(aiohttp_client, search_tree):
    data = search_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    _, page = await _titles(client, "q=unreleased")
    assert page["total"] == 0  # the validated asset's title is in the catalog, not in the public search
    for name in ("secret-master", "untagged", ".flac"):  # master file names are not searched, in any mode
        assert (await _titles(client, f"q={name}"))[1]["total"] == 0
    keyed_client = await aiohttp_client(make_app(keyed(data)))
    titles, page = await _titles(keyed_client, "q=blue&state=all", AUTH)
    assert titles == ["Blue in Green", "Back\\slash blues", "Blue Unreleased"]  # the key holder: any state
    assert (await _titles(keyed_client, "q=blue&state=validated", AUTH))[0] == ["Blue Unreleased"]
    for name in ("secret-master", "untagged", "hidden.flac"):
        assert (await _titles(keyed_client, f"q={name}&state=all", AUTH))[1]["total"] == 0


OLD_SCHEMA = """
CREATE TABLE assets (id TEXT PRIMARY KEY, state TEXT NOT NULL, source_name TEXT NOT NULL, info TEXT, error TEXT,
                     owner TEXT, lease_until REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX assets_created ON assets(created_at);
"""


async def test_a_catalog_from_before_search_gets_its_columns_on_open(aiohttp_client, tmp_path):
    path = tmp_path / "data" / "catalog.sqlite3"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(OLD_SCHEMA)
        for i, (title, artist) in enumerate([("Old Song", "Old Band"), ("Other", "Someone")]):
            db.execute("INSERT INTO assets VALUES (?,?,?,?,NULL,NULL,NULL,?,?)",
                       (asset_id_for(f"old-{i}"), "published", f"{i}.flac",
                        json.dumps({"tags": {"title": title, "artist": artist}}), 1.0 + i, 1.0 + i))
        db.execute("INSERT INTO assets VALUES (?,?,?,NULL,NULL,NULL,NULL,3,3)", (asset_id_for("old-x"), "received", "x"))
        db.execute("INSERT INTO assets VALUES (?,?,?,?,NULL,NULL,NULL,4,4)", (asset_id_for("old-bad"), "published",
                                                                           "bad.flac", "not json"))
    cat = Catalog(path)
    assert [r.info["tags"]["title"] for r in cat.list(q="OLD")] == ["Old Song"]
    assert cat.count() == 4 and cat.count(q="someone") == 1
    Catalog(path)  # a second open finds the columns there and changes nothing
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(assets)")]
        assert columns.count("search_title") == 1 and columns.count("search_artist") == 1
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=path.parent))))
    assert (await _titles(client, "q=old%20band"))[0] == ["Old Song"]


# -- thousands of assets: a page and a search stay fast ----------------------------------------------------------------

WORDS = ("blue", "night", "river", "golden", "echo", "summer", "glass", "velvet", "storm", "paper", "neon", "winter",
         "honey", "silver", "ghost", "orchid", "harbour", "static", "ember", "lantern")
ROWS = 5000


def _descriptor(i: int, rng: random.Random) -> dict:
    """A descriptor the size of the pipeline's (tags, loudness, four renditions, manifests: about 2 KB)."""
    aid = asset_id_for(f"bulk-{i}")
    title = " ".join(rng.choice(WORDS).title() for _ in range(3)) + f" {i}"
    artist = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} Ensemble {i % 250}"
    rungs = [("aac_256k", "mp4a.40.2", 256000), ("aac_128k", "mp4a.40.2", 128000), ("aac_64k", "mp4a.40.2", 64000),
             ("opus_96k", "opus", 96000)]
    return {"asset_id": aid, "source_name": f"master-{i}.flac", "published_at": 1_700_000_000 + i,
            "duration_s": 180.0 + i % 120, "sample_rate": 44100, "channels": 2, "codec": "flac",
            "tags": {"title": title, "artist": artist, "album": f"Album {i // 12}", "isrc": f"ZZTNA26{i:05d}",
                     "tracknumber": str(i % 12 + 1)},
            "loudness": {"integrated_lufs": -9.0 - i % 15, "loudness_range_lu": 6.2, "true_peak_dbtp": -0.4,
                         "sample_peak_dbfs": -0.5, "silent": False, "clipping": False, "target_lufs": -14.0,
                         "gain_db": -3.2},
            "manifests": {"hls": "master.m3u8", "dash": "manifest.mpd", "hls_single": "single/master.m3u8",
                          "dash_single": "single/manifest.mpd"},
            "renditions": [{"name": n, "codec": n.split("_")[0], "codecs": c, "nominal_bitrate": b,
                            "bandwidth": b + 41234, "average_bandwidth": b + 1234, "sample_rate": 48000,
                            "channels": 2, "segments": 30} for n, c, b in rungs],
            "artwork": {"mime": "image/png", "size": 4242, "sha256": hashlib.sha256(aid.encode()).hexdigest()}}


@pytest.fixture(scope="module")
def bulk_tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("bulk") / "data"
    rng = random.Random(5000)
    descriptors = [_descriptor(i, rng) for i in range(ROWS)]
    Catalog(data / "catalog.sqlite3").restore_published(descriptors)
    return data, descriptors


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def test_thousands_of_assets_page_and_search_in_well_under_100_ms(aiohttp_client, bulk_tree,
                                                                        record_property):
    data, descriptors = bulk_tree
    client = await aiohttp_client(make_app(Config(storage=StorageConfig(root=data))))
    expected_ensemble = [d["asset_id"] for d in descriptors if d["tags"]["artist"].endswith(" Ensemble 42")]
    cases = {  # name -> (query, expected total)
        "last_page": (f"limit=50&offset={ROWS - 50}", ROWS),
        "search_artist": ("q=ensemble%2042&limit=50", len(expected_ensemble)),
        "search_title_word": ("q=VELVET%20storm&limit=50", None),
        "search_no_match": ("q=zzz-not-there&limit=50", 0),  # every row looked at, none found
    }
    figures: dict[str, float] = {}
    for name, (query, total) in cases.items():
        await client.get(f"/api/assets?{query}")  # warm: the catalog opened, the pages in the OS cache
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            r = await client.get(f"/api/assets?{query}")
            page = await r.json()
            times.append(time.perf_counter() - t0)
            assert r.status == 200
        if total is not None:
            assert page["total"] == total, name
        figures[name] = _median_ms(times)
        if name == "search_artist":
            assert [i["id"] for i in page["items"]] == expected_ensemble  # the right ones, in publishing order
        if name == "last_page":
            assert [i["id"] for i in page["items"]] == [d["asset_id"] for d in descriptors[-50:]]
    record_property("api_ms_median_of_7", figures)
    print(f"\n{ROWS} published assets, GET /api/assets median of 7 (ms, JSON included): {figures}")
    assert all(ms < 100 for ms in figures.values()), figures


def test_the_page_and_the_search_read_the_listing_index(bulk_tree):
    """Not a timing: SQLite's plan for a page, a search and their counts is a scan of the covering index
    (no JSON parsed per row); only the page's own rows are read from the table."""
    from tonearm.core.catalog import _filter

    data, _ = bulk_tree
    cat = Catalog(data / "catalog.sqlite3")
    with closing(sqlite3.connect(data / "catalog.sqlite3")) as db:
        for q in (None, "blue"):
            where, args = _filter(AssetState.PUBLISHED, q)
            plan = " | ".join(row[3] for row in db.execute(
                f"EXPLAIN QUERY PLAN SELECT rowid FROM assets{where} ORDER BY created_at, id LIMIT 50", args))
            assert "COVERING INDEX assets_listing" in plan and "TEMP B-TREE" not in plan, plan
            plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN SELECT COUNT(*) FROM assets{where}",
                                                           args))
            assert "COVERING INDEX assets_listing" in plan, plan
    times = {"page": [], "search": [], "count_search": []}
    for _ in range(7):
        for name, fn in (("page", lambda: cat.list(limit=50, offset=ROWS - 50, state=AssetState.PUBLISHED)),
                         ("search", lambda: cat.list(limit=50, state=AssetState.PUBLISHED, q="ensemble 42")),
                         ("count_search", lambda: cat.count(state=AssetState.PUBLISHED, q="ensemble 42"))):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    figures = {k: _median_ms(v) for k, v in times.items()}
    print(f"\n{ROWS} rows, Catalog median of 7 (ms): {figures}")
    assert all(ms < 50 for ms in figures.values()), figures
