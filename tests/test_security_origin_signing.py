"""Signed URLs under attack: non-canonical tokens, unverifiable expiries, short keys, logged signatures,
and symlinks that lead from one asset into another."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from fixtures_origin import asset_id_for, make_ffmpeg_asset

from origin.app import make_app
from origin.signing import TOKEN_RE, sign, verify
from tonearm.app.cli import main as cli_main
from tonearm.core.config import Config, ConfigError, OriginConfig, StorageConfig, load

KEY = "security-signing-tests-key-0123456789abcdef"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("security-signing") / "data"
    published = data / "published"
    a = make_ffmpeg_asset(published, "security-a", freq=440)
    b = make_ffmpeg_asset(published, "security-b", freq=880)
    (published / a / "x").mkdir()
    (published / a / "x" / "seg-00001.m4s").symlink_to(published / b / "aac_128k" / "seg-00001.m4s")
    (published / a / "x" / "init.mp4").symlink_to(f"../../{b}/aac_128k/init.mp4")  # relative, same escape
    (published / a / "y").symlink_to(published / b / "aac_128k", target_is_directory=True)  # a whole folder
    (published / a / "z").mkdir()
    (published / a / "z" / "seg-00001.m4s").symlink_to(published / a / "aac_128k" / "seg-00001.m4s")  # own file
    return data, a, b


def app_for(data, **origin):
    return make_app(Config(storage=StorageConfig(root=data), origin=OriginConfig(signing_key=KEY, **origin)))


async def raw(client, target: bytes) -> tuple[int, bytes]:
    """A request written byte for byte (no client normalises the path)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


# -- one canonical token --------------------------------------------------------------------------------------------


def test_only_the_exact_token_sign_produces_verifies():
    aid = asset_id_for("canonical")
    token = sign(KEY, aid, int(time.time()) + 600)
    expiry, sig = token.split(".")
    assert TOKEN_RE.fullmatch(token) and verify(KEY, token, aid)
    assert TOKEN_RE.match(f"0{expiry}.{sig}") is None and TOKEN_RE.match(f"0123.{sig}") is None
    for variant in (f"0{expiry}.{sig}", f"00{expiry}.{sig}", f"{token}\n", f"+{expiry}.{sig}", f" {token}",
                    f"{expiry}.{sig}=", f"{expiry}.{sig}\r\n", f"{token}\x00"):
        assert not verify(KEY, variant, aid), repr(variant)


async def test_non_canonical_tokens_are_refused_over_http(aiohttp_client, tree):
    data, a, _ = tree
    client = await aiohttp_client(app_for(data, require_signed=True))
    token = sign(KEY, a, int(time.time()) + 600)
    expiry, sig = token.split(".")
    assert (await raw(client, f"/s/{token}/assets/{a}/master.m3u8".encode()))[0] == 200  # the control
    for bad in (f"0{expiry}.{sig}", f"000{expiry}.{sig}"):  # the same MAC, spelled otherwise
        status, _ = await raw(client, f"/s/{bad}/assets/{a}/master.m3u8".encode())
        assert status == 403, (bad, status)
    for bad in (f"{token}%0A", f"{token}%0a", f"{token}%00", f"{token}%20"):  # trailing bytes: never served
        status, _ = await raw(client, f"/s/{bad}/assets/{a}/master.m3u8".encode())
        assert status in (400, 403, 404), (bad, status)


def test_sign_refuses_a_ttl_the_verifier_would_reject(tree, capsys, monkeypatch):
    data, a, _ = tree
    monkeypatch.setenv("TONEARM_SIGNING_KEY", KEY)
    for ttl in ("999999999999", "99999999999999d", str(10**13)):  # expiries past 12 digits
        assert cli_main(["--data", str(data), "sign", a, "--ttl", ttl]) == 2, ttl
        out = capsys.readouterr()
        assert out.out == ""  # no URL that could never verify
        err = out.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tonearm: configuration error: --ttl"), err
        assert "999999999999" in err[0] or "12 digits" in err[0]
    with pytest.raises(ValueError):
        sign(KEY, a, 10**12)
    assert cli_main(["--data", str(data), "sign", a, "--ttl", "3650d"]) == 0  # ten years is fine
    for url in capsys.readouterr().out.split():
        assert verify(KEY, url.split("/")[4], a)


# -- a minimum key length ---------------------------------------------------------------------------------------------


def test_short_signing_keys_are_refused_at_config_load(tmp_path):
    for env in ({"TONEARM_SIGNING_KEY": "k"}, {"TONEARM_SIGNING_KEY": "x" * 31}, {"TONEARM_ORIGIN_SIGNING_KEY": "short"}):
        with pytest.raises(ConfigError, match=r"\[origin\] signing_key.*32"):
            load(env=env)
    f = tmp_path / "k.toml"
    f.write_text('[origin]\nsigning_key = "hunter2"\nrequire_signed = true\n')
    with pytest.raises(ConfigError, match="32"):
        load(f, env={})
    assert load(env={"TONEARM_SIGNING_KEY": "x" * 32}).origin.signing_key == "x" * 32
    assert load(env={}).origin.signing_key == ""  # no key: signing off, nothing to check


# -- the signature never reaches a log -------------------------------------------------------------------------------


class FailingSource:
    """Storage that fails every read, so the origin logs an error line naming the request path."""

    def __init__(self, cache) -> None:
        self.cache = cache

    def peek(self, scope, rel, kind, now):
        return None

    async def resolve(self, scope, rel, kind):
        raise OSError("storage is down")

    async def keep_gates_fresh(self) -> None:
        return None

    async def ready(self) -> bool:
        return False

    async def close(self) -> None:
        return None


async def test_signatures_are_redacted_in_the_access_log_and_error_lines(aiohttp_client, tree, tmp_path, caplog):
    data, a, b = tree
    log_path = tmp_path / "access.log"
    cfg = Config(storage=StorageConfig(root=data), origin=OriginConfig(signing_key=KEY, access_log=str(log_path)))
    app = make_app(cfg)
    client = await aiohttp_client(app)
    token = sign(KEY, a, int(time.time()) + 600)
    forged = sign("x" * 40, a, int(time.time()) + 600)
    expiry, sig = token.split(".")
    assert (await client.get(f"/s/{token}/assets/{a}/master.m3u8")).status == 200
    assert (await client.get(f"/s/{token}/assets/{a}/aac_128k/seg-00001.m4s?x=1")).status == 200
    assert (await client.get(f"/s/{forged}/assets/{a}/master.m3u8")).status == 403
    assert (await client.get(f"/s/{token}/assets/{a}/aac_128k/seg-09999.m4s")).status == 404
    assert (await raw(client, f"/%73/{token}/assets/{a}/master.m3u8".encode()))[0] == 200  # /s/ spelled %73
    assert (await raw(client, f"/s/{token}/assets/%2e%2e/x".encode()))[0] in (400, 403, 404)
    await client.close()  # flushes and closes the access log
    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 6
    assert sig not in text and forged.split(".")[1] not in text
    assert any(r["path"] == f"/s/{expiry}.<redacted>/assets/{a}/master.m3u8" for r in records), text
    assert any(r["path"] == f"/s/{expiry}.<redacted>/assets/{a}/aac_128k/seg-00001.m4s?x=1" for r in records), text

    caplog.set_level(logging.INFO, logger="tonearm.origin")
    failing = make_app(cfg)
    from origin.app import ORIGIN

    failing[ORIGIN].source = FailingSource(failing[ORIGIN].cache)
    client = await aiohttp_client(failing)
    r = await client.get(f"/s/{token}/assets/{a}/master.m3u8")
    assert r.status == 502
    await client.close()
    errors = [rec.getMessage() for rec in caplog.records if rec.name == "tonearm.origin"]
    assert any("storage error" in m and f"/s/{expiry}.<redacted>/assets/{a}" in m for m in errors), errors
    assert all(sig not in m for m in errors)


# -- symlinks stay inside their own asset -----------------------------------------------------------------------------


async def test_a_symlink_into_another_asset_is_not_served(aiohttp_client, tree):
    data, a, b = tree
    client = await aiohttp_client(app_for(data))
    token = sign(KEY, a, int(time.time()) + 600)
    for rel in ("x/seg-00001.m4s", "x/init.mp4", "y/seg-00001.m4s", "y/init.mp4", "y/index.m3u8"):
        for prefix in ("", f"/s/{token}"):
            r = await client.get(f"{prefix}/assets/{a}/{rel}")
            assert r.status == 404, (prefix, rel, r.status)
    own = (data / "published" / a / "aac_128k" / "seg-00001.m4s").read_bytes()
    r = await client.get(f"/assets/{a}/z/seg-00001.m4s")  # a symlink to the asset's own file is fine
    assert r.status == 200 and await r.read() == own
    r = await client.get(f"/assets/{b}/aac_128k/seg-00001.m4s")  # and B itself is served, under its own id
    assert r.status == 200
    assert await r.read() == (data / "published" / b / "aac_128k" / "seg-00001.m4s").read_bytes()
