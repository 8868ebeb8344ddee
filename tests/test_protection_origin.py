"""The origin's key delivery: the ClearKey licence and hls.key answer only to a valid token for their
asset, never get cached, and refuse every malformed request with a clear status.  Served by the
real aiohttp application over the session's protected assets (fixtures_protection)."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fixtures_protection import SIGNING_KEY, Protected

from origin.app import make_app
from origin.signing import sign
from tonearm.core.config import Config, OriginConfig, StorageConfig

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # the session's protected assets: whole-pipeline runs


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def client(aiohttp_client, protected: Protected):
    cfg = Config(storage=StorageConfig(root=protected.data), origin=OriginConfig(signing_key=SIGNING_KEY,
                                                                                 access_log=""))
    return await aiohttp_client(make_app(cfg))


def token(asset_id: str, ttl: int = 300) -> str:
    return sign(SIGNING_KEY, asset_id, int(time.time()) + ttl)


def licence_path(asset_id: str, tok: str | None = None) -> str:
    return f"/s/{tok or token(asset_id)}/keys/{asset_id}/clearkey"


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
async def test_licence_answers_the_assets_key(client, protected: Protected, scheme: str) -> None:
    key = protected.key(scheme)
    aid = key.asset_id
    resp = await client.post(licence_path(aid), json={"kids": [b64url(key.kid)], "type": "temporary"},
                             headers={"Origin": "https://player.example"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store, private"
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    body = await resp.json()
    assert body == {"keys": [{"kty": "oct", "kid": b64url(key.kid), "k": b64url(key.key)}], "type": "temporary"}
    # EME sends the kids padded or not: both are base64url of 16 bytes
    padded = base64.urlsafe_b64encode(key.kid).decode()
    assert (await client.post(licence_path(aid), json={"kids": [padded]})).status == 200


async def test_hls_key_is_16_bytes_under_a_token(client, protected: Protected) -> None:
    key = protected.key("aes-128")
    resp = await client.get(f"/s/{token(key.asset_id)}/keys/{key.asset_id}/hls.key")
    assert resp.status == 200 and await resp.read() == key.key
    assert resp.headers["Cache-Control"] == "no-store, private"
    assert (await client.get(f"/keys/{key.asset_id}/hls.key")).status == 403


async def test_keys_refuse_without_the_right_token(client, protected: Protected) -> None:
    key = protected.key("cbcs")
    aid, other = key.asset_id, protected.assets["cenc"]["id"]
    good = {"kids": [b64url(key.kid)]}
    expired = sign(SIGNING_KEY, aid, int(time.time()) - 5)
    forged = token(aid)[:-2] + ("AA" if not token(aid).endswith("AA") else "BB")
    cases = {
        "unsigned": f"/keys/{aid}/clearkey",
        "other asset's token": licence_path(aid, token(other)),
        "expired": licence_path(aid, expired),
        "forged": licence_path(aid, forged),
        "other key": licence_path(aid, sign("another-signing-key-of-enough-length-000", aid, int(time.time()) + 60)),
    }
    for what, path in cases.items():
        resp = await client.post(path, json=good)
        assert resp.status == 403, what
        assert resp.headers["Cache-Control"] == "no-store, private", what
        assert "k" not in (await resp.text()), what


async def test_licence_refuses_bad_requests(client, protected: Protected) -> None:
    key = protected.key("cbcs")
    aid = key.asset_id
    path = licence_path(aid)
    other_kid = protected.key("cenc").kid
    assert (await client.post(path, json={"kids": [b64url(other_kid)]})).status == 403  # not this asset's key
    assert (await client.post(path, data=b"not json")).status == 400
    assert (await client.post(path, json={"kids": []})).status == 400
    assert (await client.post(path, json={"kids": ["short"]})).status == 400
    assert (await client.post(path, json={"kids": [b64url(key.kid)] * 17})).status == 400
    assert (await client.post(path, json={"kids": [b64url(key.kid)], "type": "x"})).status == 400
    assert (await client.post(path, data=b"{" + b" " * 5000 + b"}")).status == 413
    assert (await client.get(path)).status == 405
    assert (await client.post(f"/s/{token(aid)}/keys/{aid}/other")).status == 404
    clear = protected.assets["none"]["id"]
    assert (await client.post(licence_path(clear), json={"kids": [b64url(key.kid)]})).status == 404  # no key


async def test_licence_preflight_allows_post_json(client, protected: Protected) -> None:
    aid = protected.assets["cbcs"]["id"]
    resp = await client.options(licence_path(aid), headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert resp.status == 204
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    media = await client.options(f"/assets/{aid}/master.m3u8", headers={"Origin": "https://player.example",
                                                                          "Access-Control-Request-Method": "GET"})
    assert "POST" not in media.headers["Access-Control-Allow-Methods"]


async def test_protected_media_serve_like_clear_media(client, protected: Protected) -> None:
    """Manifests and segments of protected assets keep the origin's usual headers and signed URLs."""
    aid = protected.assets["cbcs"]["id"]
    seg = await client.get(f"/s/{token(aid)}/assets/{aid}/aac_128k/seg-00001.m4s", headers={"Range": "bytes=0-99"})
    assert seg.status == 206 and seg.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    master = await client.get(f"/s/{token(aid)}/assets/{aid}/master.m3u8")
    assert master.status == 200 and "#EXT-X-SESSION-KEY" in await master.text()
    # the key store is not reachable through any asset path
    assert (await client.get(f"/assets/{aid}/../keys/{aid}.json")).status == 404


def test_no_master_key_is_created_by_the_origin(tmp_path) -> None:
    """An origin over a data dir without keys makes no master key (nothing to unwrap)."""
    from origin.licence import KeyService

    svc = KeyService(Config(storage=StorageConfig(root=tmp_path)))
    assert svc.store.get("a" * 64) is None
    assert not (tmp_path / "keys").exists()


async def test_signed_key_urls_are_redacted_in_the_access_log(aiohttp_client, protected: Protected, tmp_path) -> None:
    log = tmp_path / "access.log"
    cfg = Config(storage=StorageConfig(root=protected.data),
                 origin=OriginConfig(signing_key=SIGNING_KEY, access_log=str(log)))
    app = make_app(cfg)
    c = await aiohttp_client(app)
    key = protected.key("cbcs")
    tok = token(key.asset_id)
    assert (await c.post(licence_path(key.asset_id, tok), json={"kids": [b64url(key.kid)]})).status == 200
    await c.close()
    text = log.read_text()
    assert tok.split(".")[1] not in text and "<redacted>" in text and '"route":"keys"' in text
    assert b64url(key.key) not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line["status"] == 200 and "/keys/" in line["path"] for line in lines)


async def test_licence_request_in_pieces(client, protected: Protected) -> None:
    """A chunked licence body (no Content-Length) is read whole; one over the cap is 413 all the same."""
    key = protected.key("cenc")
    body = json.dumps({"kids": [b64url(key.kid)], "type": "temporary"}).encode()

    async def pieces(data: bytes, step: int):
        for i in range(0, len(data), step):
            yield data[i:i + step]

    resp = await client.post(licence_path(key.asset_id), data=pieces(body, 7))
    assert resp.status == 200 and (await resp.json())["keys"][0]["k"] == b64url(key.key)
    resp = await client.post(licence_path(key.asset_id), data=pieces(b"{" + b" " * 6000 + b"}", 1000))
    assert resp.status == 413
