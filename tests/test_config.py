"""Configuration precedence and validation: defaults < TOML < env < flags."""

from pathlib import Path

import pytest

from tonearm.core.config import ConfigError, load


def test_defaults_are_the_documented_ladder() -> None:
    cfg = load(env={})
    assert [r.name for r in cfg.ladder.all_rungs] == ["aac_256k", "aac_128k", "aac_64k", "opus_96k"]
    assert cfg.ladder.segment_samples == 307200
    assert cfg.storage.backend == "local"
    assert cfg.catalog_path == Path("data") / "catalog.sqlite3"


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(
        '[origin]\nport = 9000\nmanifest_ttl = 5\n[ladder]\nlossless = true\nsegment_duration = 3.2\n'
        'rungs = [{name = "aac_96k", codec = "aac", bitrate = 96000}]\n'
    )
    cfg = load(toml, env={"TONEARM_ORIGIN_PORT": "9100"}, overrides={"origin": {"manifest_ttl": 7}})
    assert cfg.origin.port == 9100  # env beats file
    assert cfg.origin.manifest_ttl == 7  # flag beats file
    assert cfg.ladder.segment_samples == 153600
    assert [r.name for r in cfg.ladder.all_rungs] == ["aac_96k", "flac"]


def test_env_shortcuts() -> None:
    key = "k" * 32  # the shortest signing key config accepts
    cfg = load(env={"TONEARM_FFMPEG": "/opt/ffmpeg", "TONEARM_SIGNING_KEY": key, "TONEARM_DATA": "/srv/t"})
    assert cfg.ffmpeg.path == "/opt/ffmpeg"
    assert cfg.origin.signing_key == key
    assert cfg.storage.root == Path("/srv/t")


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[ladder]\nsegment_duration = 6.0\n", "multiple of 0.32"),
        ("[ladder]\nsegment_duration = 0\n", "multiple of 0.32"),
        ("[ladder]\nsample_rate = 44100\n", "48000"),
        ("[ladder]\nrungs = [{name = 'a/b', codec = 'aac', bitrate = 96000}]\n", "rung name"),
        ("[ladder]\nrungs = [{name = 'x', codec = 'mp3', bitrate = 96000}]\n", "codec"),
        ("[ladder]\nrungs = [{name = 'x', codec = 'aac', bitrate = 1}]\n", "bitrate"),
        ("[ladder]\nrungs = [{name = 'x', codec = 'aac', bitrate = 96000, foo = 1}]\n", "unknown keys"),
        ("[ladder]\nrungs = [{name = 'single', codec = 'aac', bitrate = 96000}]\n", "reserved"),
        ("[nope]\na = 1\n", "unknown config section"),
        ("[origin]\nprot = 1\n", "unknown key"),
        ("[origin]\nport = 'many'\n", "cannot use"),
        ("[storage]\nbackend = 's3'\n", "s3_bucket"),
        ("[origin]\nrequire_signed = true\n", "signing_key"),
        ("not toml [", "config file"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load(f, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.toml", env={})
