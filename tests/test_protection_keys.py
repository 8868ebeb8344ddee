"""Content keys: wrapped under the master key (RFC 3394), kept per asset, reused by a retried job, never
printed; the [protection] config; the CPIX export (DASH-IF CPIX 2.3) through ``tonearm protection cpix``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from fixtures_protection import Protected

from tonearm.app.cli import main as cli
from tonearm.core.config import ConfigError, load, validate
from tonearm.core.keys import KeyStore, KeyStoreError, LocalKeyFile, open_keystore

pytestmark = [pytest.mark.timeout(60)]
AID = "ab" * 32
CPIX = "{urn:dashif:org:cpix}"
PSKC = "{urn:ietf:params:xml:ns:keyprov:pskc}"


def test_keys_are_wrapped_and_reused(tmp_path: Path) -> None:
    store = open_keystore(tmp_path)
    key = store.key_for(AID, "cbcs")
    assert len(key.key) == len(key.kid) == len(key.iv) == 16 and len({key.key, key.kid, key.iv}) == 3
    assert store.key_for(AID, "cbcs") == key  # a retried job packages with the same key
    rec = json.loads((tmp_path / "keys" / f"{AID}.json").read_text())
    assert key.key.hex() not in json.dumps(rec)
    master = (tmp_path / "keys" / "master.key").read_bytes()
    assert len(master) == 32 and aes_key_unwrap(master, bytes.fromhex(rec["wrapped_key"])) == key.key
    assert os.stat(tmp_path / "keys" / "master.key").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "keys" / f"{AID}.json").st_mode & 0o777 == 0o600
    other = store.key_for(AID, "cenc")  # a different scheme is a different key
    assert other.scheme == "cenc" and other.key != key.key and store.get(AID) == other
    assert key.key.hex() not in repr(key) and "<secret>" in repr(key)


def test_wrong_or_broken_master_key_is_a_typed_error(tmp_path: Path) -> None:
    open_keystore(tmp_path).key_for(AID, "cenc")
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    with pytest.raises(KeyStoreError, match="does not unwrap"):
        KeyStore(tmp_path / "keys", LocalKeyFile(other)).get(AID)
    other.write_bytes(b"short")
    with pytest.raises(KeyStoreError, match="expected 32 bytes"):
        KeyStore(tmp_path / "keys", LocalKeyFile(other)).get(AID)
    (tmp_path / "keys" / f"{AID}.json").write_text("[1, 2]")
    with pytest.raises(KeyStoreError, match="not a key record"):
        open_keystore(tmp_path).get(AID)
    with pytest.raises(KeyStoreError, match="not an asset id"):
        open_keystore(tmp_path).get("../../etc/passwd")
    with pytest.raises(KeyStoreError, match="no key"):
        open_keystore(tmp_path).key_for(AID, "none")


def test_master_key_file_is_configurable(tmp_path: Path) -> None:
    master = tmp_path / "elsewhere" / "kek"
    store = open_keystore(tmp_path / "data", str(master))
    store.key_for(AID, "cbcs")
    assert master.stat().st_size == 32 and not (tmp_path / "data" / "keys" / "master.key").exists()
    assert open_keystore(tmp_path / "data").wrapper.path != master  # the default is the data dir's


def test_protection_config() -> None:
    assert load(env={}).protection.scheme == "none"
    assert load(env={"TONEARM_PROTECTION_SCHEME": "cbcs"}).protection.scheme == "cbcs"
    with pytest.raises(ConfigError, match="scheme"):
        load(env={"TONEARM_PROTECTION_SCHEME": "rot13"})
    cfg = load(env={"TONEARM_PROTECTION_MASTER_KEY_FILE": "/srv/kek"})
    assert validate(cfg).protection.master_key_file == "/srv/kek"


def test_pipeline_refuses_an_unknown_scheme(tmp_path: Path) -> None:
    from tonearm.app.pipeline import Context, process
    from tonearm.core.config import Config, StorageConfig

    with pytest.raises(ConfigError, match="protection"):
        process(Context.from_config(Config(storage=StorageConfig(root=tmp_path))), tmp_path / "x.flac",
                protection="rot13")


@pytest.mark.slow  # the session's protected assets
@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
def test_cpix_export(protected: Protected, tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    key = protected.key(scheme)
    out = tmp_path / "cpix.xml"
    tonearm = ["--data", str(protected.data), "protection", "cpix"]
    assert cli([*tonearm, key.asset_id, "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and capsys.readouterr().out == ""
    root = ET.fromstring(out.read_text())
    assert root.tag == f"{CPIX}CPIX" and root.get("contentId") == key.asset_id and root.get("version") == "2.3"
    [ck] = root.iter(f"{CPIX}ContentKey")
    assert ck.get("kid") == key.kid_uuid and ck.get("commonEncryptionScheme") == scheme
    assert base64.b64decode(ck.find(f"{CPIX}Data/{PSKC}Secret/{PSKC}PlainValue").text) == key.key
    if scheme == "cbcs":
        assert base64.b64decode(ck.get("explicitIV")) == key.iv
    systems = {d.get("systemId"): d for d in root.iter(f"{CPIX}DRMSystem")}
    assert set(systems) == {"1077efec-c0b2-4d02-ace3-3c1e52e2fb4b", "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
                            "9a04f079-9840-4286-ab92-e65be0885f95", "e2719d58-a985-b3c9-781a-b030af78d30e"}
    assert all(d.get("kid") == key.kid_uuid for d in systems.values())
    # the PSSH each DRM system gets is the one in the published init segment
    init = (protected.published(scheme) / "aac_128k" / "init.mp4").read_bytes()
    for sid in ("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b", "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"):
        assert base64.b64decode(systems[sid].find(f"{CPIX}PSSH").text) in init
    # stdout, and the refusals
    assert cli([*tonearm, key.asset_id]) == 0 and capsys.readouterr().out == out.read_text()
    assert cli([*tonearm, protected.assets["none"]["id"]]) == 1 and "no content key" in capsys.readouterr().err
    assert cli([*tonearm, "nope"]) == 2 and "not an asset id" in capsys.readouterr().err


@pytest.mark.slow
def test_cpix_command_as_installed(protected: Protected) -> None:
    """The installed ``tonearm`` command (a subprocess, as operators run it)."""
    key = protected.key("cbcs")
    proc = subprocess.run([str(Path(sys.executable).with_name("tonearm")), "--data", str(protected.data), "protection",
                           "cpix", key.asset_id], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and key.kid_uuid in proc.stdout, proc.stderr


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
def test_batched_sample_encryption_matches_a_cipher_per_sample(tmp_path: Path, scheme: str) -> None:
    """packager.protect encrypts a fragment's samples in ECB batches; the bytes are those of one
    cryptography CBC/CTR encryptor per sample (23001-7: CTR per sample from IV || 0; cbcs: CBC from
    the constant IV over whole blocks, the tail clear), sizes from 0 to 3000 bytes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from packager.protect import Encryptor

    key = open_keystore(tmp_path).key_for(AID, scheme)
    sizes = [0, 1, 15, 16, 17, 31, 32, 33, 255, 256, 700, 1023, 3000]
    payload = os.urandom(sum(sizes))
    enc, aux = Encryptor(key).samples(payload, sizes)
    assert len(enc) == len(payload) and aux is not None
    senc = aux(0)[-(16 + (8 * len(sizes) if scheme == "cenc" else 0)):]
    expected, pos = bytearray(), 0
    for i, size in enumerate(sizes):
        sample = payload[pos:pos + size]
        if scheme == "cenc":
            iv = senc[16 + 8 * i:24 + 8 * i]
            c = Cipher(algorithms.AES(key.key), modes.CTR(iv + bytes(8))).encryptor()
            expected += c.update(sample) + c.finalize()
        else:
            whole = size - size % 16
            c = Cipher(algorithms.AES(key.key), modes.CBC(key.iv)).encryptor()
            expected += c.update(sample[:whole]) + c.finalize() + sample[whole:]
        pos += size
    assert enc == bytes(expected) and enc != payload


@pytest.mark.slow  # the session's protected assets
def test_sign_prints_the_licence_url(protected: Protected, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from fixtures_protection import SIGNING_KEY

    monkeypatch.setenv("TONEARM_SIGNING_KEY", SIGNING_KEY)
    for scheme, licence in (("cbcs", True), ("cenc", True), ("aes-128", False), ("none", False)):
        aid = protected.assets[scheme]["id"]
        assert cli(["--data", str(protected.data), "sign", aid, "--ttl", "10m"]) == 0
        lines = capsys.readouterr().out.split()
        keys = [u for u in lines if "/keys/" in u]
        assert keys == ([f"{u.split('/assets/')[0]}/keys/{aid}/clearkey" for u in lines[:1]] if licence else []), lines
        assert len(lines) == len(protected.assets[scheme]["manifests"]) + licence


@pytest.mark.slow  # a whole-pipeline run
def test_ingest_protection_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``tonearm ingest --protection`` overrides [protection] scheme for that run; a bad name is a usage error."""
    from fixtures_players import make_tone_master

    master = make_tone_master(tmp_path / "m.flac", title="flag", seconds=3.0)
    data = tmp_path / "data"
    assert cli(["--data", str(data), "ingest", "--jobs", "1", "--protection", "cenc", "--json", str(master)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    aid = record["asset_id"]
    descriptor = json.loads((data / "published" / aid / "asset.json").read_text())
    assert descriptor["protection"]["scheme"] == "cenc" and set(descriptor["manifests"]) == {"dash", "dash_single"}
    assert open_keystore(data).get(aid).kid_hex == descriptor["protection"]["kid"]
    with pytest.raises(SystemExit) as exc:
        cli(["--data", str(data), "ingest", "--protection", "rot13", str(master)])
    assert exc.value.code == 2
