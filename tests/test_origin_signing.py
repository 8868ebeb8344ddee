"""Signed URLs: token format, expiry, scope, forgery, require_signed, relative URIs, ``tonearm sign``."""

from __future__ import annotations

import time
from urllib.parse import urljoin, urlsplit

import m3u8
import pytest
from fixtures_origin import asset_id_for, make_ffmpeg_asset

from origin.app import make_app
from origin.signing import parse_ttl, sign, verify
from tonearm.app.cli import main as cli_main
from tonearm.core.config import Config, ConfigError, OriginConfig, StorageConfig

KEY = "k3y-for-tests-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("signing") / "data"
    return data, make_ffmpeg_asset(data / "published", "signing"), make_ffmpeg_asset(data / "published", "other")


def app_for(data, **origin):
    return make_app(Config(storage=StorageConfig(root=data), origin=OriginConfig(signing_key=KEY, **origin)))


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_parse_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "1w", "h", "1.5h", "10 minutes"])
def test_parse_ttl_rejects(text):
    with pytest.raises(ConfigError):
        parse_ttl(text)


def test_verify_rules():
    a, b = asset_id_for("a"), asset_id_for("b")
    token = sign(KEY, a, int(time.time()) + 60)
    assert verify(KEY, token, a)
    assert not verify(KEY, token, b)  # scoped to one asset
    assert not verify("other-key", token, a)
    expiry, sig = token.split(".")
    assert not verify(KEY, f"{int(expiry) + 1}.{sig}", a)  # extending the expiry breaks the MAC
    assert not verify(KEY, f"{expiry}.{sig[:-1]}A" if sig[-1] != "A" else f"{expiry}.{sig[:-1]}B", a)
    assert not verify(KEY, sign(KEY, a, int(time.time()) - 1), a)  # expired
    assert not verify("", token, a)
    assert not verify(KEY, "garbage", a)


async def test_signed_playlist_and_relative_uris(aiohttp_client, tree):
    data, asset, _ = tree
    client = await aiohttp_client(app_for(data))
    token = sign(KEY, asset, int(time.time()) + 300)
    base = f"/s/{token}/assets/{asset}/"
    master_url = base + "master.m3u8"
    r = await client.get(master_url)
    assert r.status == 200
    master = m3u8.loads(await r.text())
    fetched = 0
    for playlist in master.playlists:
        media_url = urljoin(master_url, playlist.uri)
        assert media_url.startswith(base)  # the token is inherited by relative URIs
        media = m3u8.loads(await (await client.get(media_url)).text())
        for uri in [media.segment_map[0].uri] + [s.uri for s in media.segments]:
            seg = await client.get(urljoin(media_url, uri))
            assert seg.status == 200, uri
            assert await seg.read() == (data / "published" / asset / urlsplit(urljoin(media_url, uri)).path
                                        .removeprefix(base)).read_bytes()
            fetched += 1
    assert fetched >= 3


async def test_forged_expired_and_wrong_scope_are_403(aiohttp_client, tree):
    data, asset, other = tree
    client = await aiohttp_client(app_for(data))
    now = int(time.time())
    good = sign(KEY, asset, now + 300)
    expiry, sig = good.split(".")
    bad_tokens = [
        sign(KEY, asset, now - 5),  # expired
        sign("not-the-key-0123456789abcdef0123456789", asset, now + 300),  # forged
        sign(KEY, other, now + 300),  # another asset's token
        f"{int(expiry) + 3600}.{sig}",  # tampered expiry
        f"{expiry}.{sig[:20]}",  # truncated signature
        "abc",
    ]
    for token in bad_tokens:
        r = await client.get(f"/s/{token}/assets/{asset}/master.m3u8")
        assert r.status == 403, token
    assert (await client.get(f"/s/{good}/assets/{asset}/master.m3u8")).status == 200


async def test_require_signed(aiohttp_client, tree):
    data, asset, _ = tree
    client = await aiohttp_client(app_for(data, require_signed=True))
    assert (await client.get(f"/assets/{asset}/master.m3u8")).status == 403
    assert (await client.get(f"/assets/{asset}/aac_128k/seg-00001.m4s")).status == 403
    token = sign(KEY, asset, int(time.time()) + 60)
    assert (await client.get(f"/s/{token}/assets/{asset}/aac_128k/seg-00001.m4s")).status == 200


def test_sign_command_prints_hls_and_dash_urls(tree, capsys, monkeypatch):
    data, asset, _ = tree
    monkeypatch.setenv("TONEARM_SIGNING_KEY", KEY)
    assert cli_main(["--data", str(data), "sign", asset, "--ttl", "1h", "--base", "http://cdn.example"]) == 0
    urls = capsys.readouterr().out.split()
    assert {u.rsplit("/assets/", 1)[1].split("/", 1)[1] for u in urls} == {
        "master.m3u8", "manifest.mpd", "single/master.m3u8", "single/manifest.mpd"}
    for u in urls:
        parts = urlsplit(u)
        assert parts.netloc == "cdn.example"
        token = parts.path.split("/")[2]
        assert verify(KEY, token, asset)
        assert 3500 < int(token.split(".")[0]) - time.time() <= 3600


def test_sign_command_errors(tree, capsys, monkeypatch):
    data, asset, _ = tree
    monkeypatch.delenv("TONEARM_SIGNING_KEY", raising=False)
    assert cli_main(["--data", str(data), "sign", asset]) == 2  # no key: configuration error
    monkeypatch.setenv("TONEARM_SIGNING_KEY", KEY)
    assert cli_main(["--data", str(data), "sign", "not-an-id"]) == 2
    assert cli_main(["--data", str(data), "sign", asset, "--ttl", "soon"]) == 2
    assert "configuration error" in capsys.readouterr().err
