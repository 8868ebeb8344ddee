"""The catalog API as a stranger sees it: no tokens, no unpublished assets, no internals, no open CORS.

Hostile rows (quarantined and failed assets whose error records carry machine
paths and ffmpeg stderr, master file names, a published asset with a stale
error from an earlier failed run) are written into a real catalog; every
response of the API, in every mode, is then searched for those strings and
for anything shaped like a signed token.
"""

from __future__ import annotations

import hmac
import json
import re
import time

import pytest
from fixtures_origin import asset_id_for, make_ffmpeg_asset

from origin.app import make_app
from origin.signing import verify
from tonearm.core.catalog import Catalog
from tonearm.core.config import Config, ConfigError, OriginConfig, StorageConfig, load
from tonearm.core.model import AssetState

SIGNING_KEY = "catalog-tests-signing-key-0123456789abcdef"
CATALOG_KEY = "catalog-tests-bearer-key-fedcba9876543210"
TOKEN = re.compile(r"/s/[0-9]+\.[A-Za-z0-9_-]{20,}")
# Strings that must never leave the origin through the public catalog.
HOSTILE = [
    "HOSTILE-quarantined-name", "HOSTILE-failed-name", "HOSTILE-published-name", "HOSTILE-validated-name",
    "HOSTILE-STDERR", "HOSTILE-STALE", "/srv/tonearm/", "/home/alice/", "0x55d0c0ffee", "Invalid data found",
    "Traceback",
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("security-catalog") / "data"
    played = make_ffmpeg_asset(data / "published", "security-catalog")
    cat = Catalog(data / "catalog.sqlite3")
    descriptor = json.loads((data / "published" / played / "asset.json").read_text())
    descriptor["source_name"] = "HOSTILE-published-name.flac"  # the descriptor carries the master's name
    cat.claim(played, "/home/alice/unreleased/HOSTILE-published-name.flac")
    # An earlier run failed (its error stays in the row), the retry published.
    cat.set_state(played, AssetState.FAILED, error={
        "code": "ffmpeg_failed", "message": "ffmpeg exited 1: HOSTILE-STALE stderr",
        "details": {"stderr": "[aac @ 0x55d0c0ffee] HOSTILE-STDERR", "path": "/srv/tonearm/data/staging/x"}})
    cat.claim(played, "/home/alice/unreleased/HOSTILE-published-name.flac")
    cat.set_state(played, AssetState.PUBLISHED, info=descriptor)
    quarantined = asset_id_for("security-quarantined")
    cat.claim(quarantined, "/home/alice/masters/HOSTILE-quarantined-name.wav")
    cat.set_state(quarantined, AssetState.QUARANTINED, error={
        "code": "undecodable",
        "message": "/srv/tonearm/data/masters/q.wav: Invalid data found when processing input",
        "details": {"stderr": "[wav @ 0x55d0c0ffee] HOSTILE-STDERR invalid RIFF header\nTraceback (most recent call",
                    "path": "/srv/tonearm/data/quarantine/q/master.bin"}})
    failed = asset_id_for("security-failed")
    cat.claim(failed, "HOSTILE-failed-name.flac")
    cat.set_state(failed, AssetState.FAILED, error={
        "code": "internal", "message": "Traceback: HOSTILE-STDERR in /srv/tonearm/app/transcode/run.py",
        "details": {"argv": ["/usr/bin/ffmpeg", "-i", "/home/alice/HOSTILE-failed-name.flac"]}})
    validated = asset_id_for("security-validated")  # in progress: its info is the master's, name included
    cat.claim(validated, "HOSTILE-validated-name.aiff")
    cat.set_state(validated, AssetState.VALIDATED, info={"source_name": "HOSTILE-validated-name.aiff",
                                                         "path": "/srv/tonearm/data/masters/v.aiff"})
    return {"data": data, "played": played, "hidden": [quarantined, failed, validated]}


def app_for(data, **origin) -> object:
    return make_app(Config(storage=StorageConfig(root=data), origin=OriginConfig(**origin)))


async def everything(client, hidden: list[str], played: str, headers: dict[str, str] | None = None
                     ) -> dict[str, tuple[int, str]]:
    """Every catalog URL a stranger might try, with every query the API ever knew."""
    paths = ["/api/assets", "/api/assets?limit=500", "/api/assets/", f"/api/assets/{played}"]
    paths += [f"/api/assets?state={s}&limit=500" for s in ("all", *(st.value for st in AssetState))]
    paths += [f"/api/assets/{a}" for a in hidden]
    out = {}
    for path in paths:
        r = await client.get(path, headers=headers or {})
        out[path] = (r.status, (await r.text()) + json.dumps(dict(r.headers)))
    return out


def assert_clean(responses: dict[str, tuple[int, str]]) -> None:
    for path, (_, text) in responses.items():
        for needle in HOSTILE:
            assert needle not in text, (path, needle, text[:2000])
        assert '"error"' not in text or text.startswith('{"error"'), (path, text[:500])  # no error records
        assert "source_name" not in text, (path, text[:500])


# -- item 2: the public catalog lists published assets only, and nothing of the machine ---------------------------


async def test_public_catalog_shows_no_unpublished_asset_and_no_internals(aiohttp_client, hostile):
    client = await aiohttp_client(app_for(hostile["data"]))
    responses = await everything(client, hostile["hidden"], hostile["played"])
    assert_clean(responses)
    for aid in hostile["hidden"]:
        assert responses[f"/api/assets/{aid}"][0] == 404  # not published: not there
        assert all(aid not in text for _, text in responses.values())
    page = json.loads((await (await client.get("/api/assets?limit=500")).text()))
    assert [i["id"] for i in page["items"]] == [hostile["played"]] and page["total"] == 1
    detail = await (await client.get(f"/api/assets/{hostile['played']}")).json()
    assert detail["id"] == hostile["played"] and detail["renditions"][0]["name"] == "aac_128k"
    assert "error" not in detail and "source_name" not in detail
    for state in ("all", "failed", "quarantined", "validated", "received"):  # the state filter is gone
        assert (await client.get(f"/api/assets?state={state}")).status == 400
    assert (await client.get("/api/assets?state=published")).status == 200


# -- item 1: nothing reachable without a token hands one out --------------------------------------------------------


async def test_require_signed_public_catalog_mints_no_token(aiohttp_client, hostile):
    data, played = hostile["data"], hostile["played"]
    client = await aiohttp_client(app_for(data, signing_key=SIGNING_KEY, require_signed=True))
    responses = await everything(client, hostile["hidden"], played)
    assert_clean(responses)
    for path in ("/", "/static/demo.js", "/static/index.html", "/healthz", "/metrics",
                 f"/assets/{played}/asset.json", f"/assets/{played}/master.m3u8"):
        r = await client.get(path)
        responses[path] = (r.status, (await r.text()) + json.dumps(dict(r.headers)))
    r = await client.options("/api/assets", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "GET"})
    responses["OPTIONS /api/assets"] = (r.status, (await r.text()) + json.dumps(dict(r.headers)))
    for path, (_, text) in responses.items():
        assert not TOKEN.search(text), (path, text[:1000])
    page = await (await client.get("/api/assets")).json()
    (item,) = page["items"]
    assert "playback" not in item and item["signing_required"] is True
    detail = await (await client.get(f"/api/assets/{played}")).json()
    assert "playback" not in detail and detail["signing_required"] is True
    assert (await client.get(f"/assets/{played}/master.m3u8")).status == 403


async def test_public_catalog_gives_unsigned_paths_when_signing_is_optional(aiohttp_client, hostile):
    """A signing key alone (require_signed off) does not make the public catalog a token vending machine."""
    data, played = hostile["data"], hostile["played"]
    client = await aiohttp_client(app_for(data, signing_key=SIGNING_KEY), auto_decompress=False)
    responses = await everything(client, hostile["hidden"], played)
    assert all(not TOKEN.search(text) for _, text in responses.values())
    detail = await (await client.get(f"/api/assets/{played}")).json()
    assert detail["playback"]["segmented"]["hls"] == f"/assets/{played}/master.m3u8"
    assert detail["signing_required"] is False
    for layout in detail["playback"].values():
        for url in layout.values():
            assert (await client.get(url, headers={"Accept-Encoding": "identity"})).status == 200, url


async def test_catalog_off_answers_404(aiohttp_client, hostile):
    client = await aiohttp_client(app_for(hostile["data"], catalog="off"))
    responses = await everything(client, hostile["hidden"], hostile["played"])
    assert {status for status, _ in responses.values()} == {404}
    assert_clean(responses)
    assert (await client.get("/api/anything")).status == 404
    assert (await client.get(f"/assets/{hostile['played']}/master.m3u8")).status == 200  # media still served


async def test_catalog_key_needs_the_bearer_key_and_only_then_signs(aiohttp_client, hostile, monkeypatch):
    import origin.api

    compared: list[int] = []
    real = hmac.compare_digest

    def spy(a, b):  # the key check is constant-time
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr(origin.api.hmac, "compare_digest", spy)
    data, played = hostile["data"], hostile["played"]
    client = await aiohttp_client(app_for(data, signing_key=SIGNING_KEY, require_signed=True, catalog="key",
                                          catalog_key=CATALOG_KEY))
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Bearer {CATALOG_KEY[:-1]}"}, {"Authorization": f"Bearer {CATALOG_KEY}x"},
                    {"Authorization": f"Basic {CATALOG_KEY}"}, {"Authorization": CATALOG_KEY},
                    {"X-Api-Key": CATALOG_KEY}):
        responses = await everything(client, hostile["hidden"], played, headers)
        assert {status for status, _ in responses.values()} == {401}, headers
        assert all(not TOKEN.search(text) for _, text in responses.values())
        assert_clean(responses)
        r = await client.get("/api/assets", headers=headers)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert compared  # the comparison went through hmac.compare_digest
    good = {"Authorization": f"Bearer {CATALOG_KEY}"}
    detail = await (await client.get(f"/api/assets/{played}", headers=good)).json()
    url = detail["playback"]["segmented"]["hls"]
    token = url.split("/")[2]
    assert url.startswith("/s/") and verify(SIGNING_KEY, token, played)
    assert 3000 < int(token.split(".")[0]) - time.time() <= 3600
    assert (await client.get(url)).status == 200
    page = await (await client.get("/api/assets", headers={"Authorization": f"bearer {CATALOG_KEY}"})).json()
    assert [i["id"] for i in page["items"]] == [played] and TOKEN.search(json.dumps(page))


# -- item 3: CORS for the API apart from CORS for media; Private Network Access only when asked for -------------------


async def test_api_has_no_cors_by_default_while_media_keeps_it(aiohttp_client, hostile):
    played = hostile["played"]
    client = await aiohttp_client(app_for(hostile["data"]))
    origin = {"Origin": "https://evil.example"}
    for path in ("/api/assets", f"/api/assets/{played}", "/api/nothing"):
        r = await client.get(path, headers=origin)
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], (path, dict(r.headers))
        r = await client.options(path, headers={**origin, "Access-Control-Request-Method": "GET",
                                                "Access-Control-Request-Private-Network": "true"})
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], (path, dict(r.headers))
    r = await client.get(f"/assets/{played}/master.m3u8", headers=origin)
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # media: cors_origins = ["*"] as before
    r = await client.options(f"/assets/{played}/aac_128k/seg-00001.m4s", headers={
        **origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"})
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "Range" in r.headers["Access-Control-Allow-Headers"]


async def test_api_cors_origins_are_their_own_list(aiohttp_client, hostile):
    app = app_for(hostile["data"], api_cors_origins=("https://app.example",), cors_origins=("https://player.example",),
                  catalog="key", catalog_key=CATALOG_KEY)
    client = await aiohttp_client(app)
    auth = {"Authorization": f"Bearer {CATALOG_KEY}"}
    r = await client.get("/api/assets", headers={**auth, "Origin": "https://app.example"})
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in r.headers["Vary"]
    r = await client.get("/api/assets", headers={**auth, "Origin": "https://player.example"})
    assert "Access-Control-Allow-Origin" not in r.headers  # a media origin is not an API origin
    r = await client.options("/api/assets", headers={"Origin": "https://app.example",
                                                     "Access-Control-Request-Method": "GET",
                                                     "Access-Control-Request-Headers": "authorization"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    r = await client.get(f"/assets/{hostile['played']}/master.m3u8", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in r.headers  # and the API's origin is not a media origin
    r = await client.get(f"/assets/{hostile['played']}/master.m3u8", headers={"Origin": "https://player.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://player.example"


async def test_private_network_access_only_when_allowed(aiohttp_client, hostile):
    seg = f"/assets/{hostile['played']}/aac_128k/seg-00001.m4s"
    ask = {"Origin": "https://public.example", "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Private-Network": "true"}
    client = await aiohttp_client(app_for(hostile["data"]))
    r = await client.options(seg, headers=ask)
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Private-Network" not in r.headers
    client = await aiohttp_client(app_for(hostile["data"], allow_private_network=True))
    r = await client.options(seg, headers=ask)
    assert r.headers["Access-Control-Allow-Private-Network"] == "true"
    r = await client.options(seg, headers={k: v for k, v in ask.items() if "Private" not in k})
    assert "Access-Control-Allow-Private-Network" not in r.headers  # only as an answer to the question


# -- the demo page in the default setup (make run: no key, public catalog) ------------------------------------------


async def test_demo_page_setup_still_plays(aiohttp_client, hostile):
    played = hostile["played"]
    client = await aiohttp_client(app_for(hostile["data"]), auto_decompress=False)
    assert (await client.get("/")).status == 200
    js = await (await client.get("/static/demo.js", headers={"Accept-Encoding": "identity"})).text()
    assert "/api/assets" in js and "signing_required" in js  # the page says why an asset has no playback URL
    page = await (await client.get("/api/assets?limit=50&offset=0")).json()
    (item,) = page["items"]
    detail = await (await client.get(f"/api/assets/{item['id']}")).json()
    hls = detail["playback"]["segmented"]["hls"]
    assert hls == f"/assets/{played}/master.m3u8"
    assert (await client.get(hls, headers={"Accept-Encoding": "identity"})).status == 200
    assert detail["title"] is None or isinstance(detail["title"], str)


# -- configuration ----------------------------------------------------------------------------------------------------


def test_catalog_settings_defaults_and_validation(tmp_path):
    cfg = load(env={})
    assert (cfg.origin.catalog, cfg.origin.catalog_key, cfg.origin.api_cors_origins,
            cfg.origin.allow_private_network) == ("public", "", (), False)
    assert cfg.origin.cors_origins == ("*",)
    ok = load(env={"TONEARM_ORIGIN_CATALOG": "key", "TONEARM_ORIGIN_CATALOG_KEY": CATALOG_KEY,
                   "TONEARM_ORIGIN_API_CORS_ORIGINS": "https://a.example,https://b.example",
                   "TONEARM_ORIGIN_ALLOW_PRIVATE_NETWORK": "true"})
    assert ok.origin.catalog == "key" and ok.origin.api_cors_origins == ("https://a.example", "https://b.example")
    assert ok.origin.allow_private_network is True
    assert load(env={"TONEARM_ORIGIN_API_CORS_ORIGINS": ""}).origin.api_cors_origins == ()
    bad = [
        ({"TONEARM_ORIGIN_CATALOG": "key"}, "catalog_key"),
        ({"TONEARM_ORIGIN_CATALOG": "key", "TONEARM_ORIGIN_CATALOG_KEY": "x" * 31}, "32"),
        ({"TONEARM_ORIGIN_CATALOG": "private"}, "public"),
    ]
    for env, message in bad:
        with pytest.raises(ConfigError, match=message):
            load(env=env)
    f = tmp_path / "o.toml"
    f.write_text('[origin]\ncatalog = "off"\napi_cors_origins = ["https://x.example"]\n')
    assert load(f, env={}).origin.catalog == "off"
