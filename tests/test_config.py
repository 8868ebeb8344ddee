"""Configuration precedence and validation: defaults < TOML < env < flags."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tonearm.core.config import ConfigError, load

TONEARM = Path(sys.executable).with_name("tonearm")  # the installed command, as operators run it


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
        ("[ladder]\nrungs = [{name = 'x', codec = 'aac', bitrate = 96000, foo = 1}]\n",
         r"rungs\[0\]\.foo: unknown key"),
        ("[ladder]\nrungs = [{name = 'single', codec = 'aac', bitrate = 96000}]\n", "reserved"),
        ("[nope]\na = 1\n", "unknown config section"),
        ("[origin]\nprot = 1\n", "unknown key"),
        ("[origin]\nport = 'many'\n", r"\[origin\] port: expected an integer"),
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


# -- the schema: every wrong type, unknown key and out-of-range value is one line naming the key ------------------


def _error(tmp_path: Path, toml: str) -> str:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(f, env={})
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.mark.parametrize(
    "toml, expected",
    [
        # a string for an int, inside a rung
        ('[ladder]\nrungs = [{name = "aac_96k", codec = "aac", bitrate = "96000"}]\n',
         '[ladder] rungs[0].bitrate: expected an integer, got a string "96000"'),
        ('[origin]\nport = "8080"\n', '[origin] port: expected an integer 0..65535, got a string "8080"'),
        ('[ffmpeg]\ntimeout = "10"\n', '[ffmpeg] timeout: expected a number > 0, got a string "10"'),
        # a list for a string, a table for a list, a scalar for a table, a string for a bool
        ('[origin]\nhost = ["a", "b"]\n', '[origin] host: expected a string, got a list'),
        ('[storage]\nroot = 5\n', '[storage] root: expected a path (a string), got 5'),
        ('[origin]\ncors_origins = {a = 1}\n', '[origin] cors_origins: expected a list of strings, got a table'),
        ('[ladder]\nlayouts = "single"\n', '[ladder] layouts: expected a list of strings, got a string "single"'),
        ('[ladder]\nrungs = {name = "x"}\n', '[ladder] rungs: expected a list of tables, got a table'),
        ('ladder = 5\n', '[ladder]: expected a table, got 5'),
        ('[ladder]\nlossless = "yes"\n', '[ladder] lossless: expected true or false, got a string "yes"'),
        ('[storage]\nbackend = "gcs"\n', '[storage] backend: expected one of "local", "s3", got a string "gcs"'),
        # a bool for an int
        ('[origin]\nport = true\n', '[origin] port: expected an integer 0..65535, got true'),
        ('[origin]\nworkers = false\n', '[origin] workers: expected an integer >= 1, got false'),
        ('[ingest]\nmax_bytes = true\n', '[ingest] max_bytes: expected an integer > 0, got true'),
        # out of range
        ('[origin]\nport = 70000\n', '[origin] port: expected an integer 0..65535, got 70000'),
        ('[origin]\nport = -1\n', '[origin] port: expected an integer 0..65535, got -1'),
        ('[origin]\nkeepalive_timeout = -1\n',
         '[origin] keepalive_timeout: expected a number > 0 and <= 86400, got -1'),
        ('[origin]\nheader_timeout = 100000.0\n',
         '[origin] header_timeout: expected a number > 0 and <= 86400, got 100000.0'),
        ('[ffmpeg]\ntimeout = -5\n', '[ffmpeg] timeout: expected a number > 0, got -5'),
        ('[ingest]\nlease_s = 0\n', '[ingest] lease_s: expected a number > 0, got 0'),
        ('[origin]\nmax_connections = 0\n', '[origin] max_connections: expected an integer >= 1, got 0'),
        ('[origin]\ncache_mb = -1\n', '[origin] cache_mb: expected an integer >= 0, got -1'),
        ('[origin]\ndrain_s = 301\n', '[origin] drain_s: expected a number >= 0 and <= 300, got 301'),
        ('[origin]\ns3_timeout = 0\n', '[origin] s3_timeout: expected a number > 0 and <= 120, got 0'),
        ('[origin]\ns3_attempts = 0\n', '[origin] s3_attempts: expected an integer 1..10, got 0'),
    ],
)
def test_wrong_types_and_ranges_are_one_line_naming_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    assert _error(tmp_path, toml) == expected


@pytest.mark.parametrize(
    "toml, start, allowed",
    [
        ("[nope]\na = 1\n", "unknown config section [nope]", "[origin]"),
        ("port = 8080\n", "unknown config section [port]", "[storage]"),
        ("[origin]\nprot = 1\n", "[origin] prot: unknown key", "port"),
        ("[origin.tls]\ncert = 'x'\n", "[origin] tls: unknown key", "host"),
        ("[ladder]\nrungs = [{name = 'a', codec = 'aac', bitrate = 96000},"
         " {name = 'x', codec = 'aac', bitrate = 96000, foo = 1}]\n", "[ladder] rungs[1].foo: unknown key", "bitrate"),
        ('[origin]\n"a\\nb" = 1\n', '[origin] "a\\nb": unknown key', "port"),  # a hostile key stays on one line
    ],
)
def test_unknown_keys_are_named_with_the_known_ones(tmp_path: Path, toml: str, start: str, allowed: str) -> None:
    message = _error(tmp_path, toml)
    assert message.startswith(start) and allowed in message.split("; known: ", 1)[1], message


def test_a_rung_without_a_name_says_what_is_missing(tmp_path: Path) -> None:
    message = _error(tmp_path, "[ladder]\nrungs = [{codec = 'aac', bitrate = 96000}]\n")
    assert message.startswith("[ladder] rungs[0].name: missing"), message


def test_the_toml_file_is_checked_even_where_the_environment_overrides_it(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[origin]\nport = true\n")
    with pytest.raises(ConfigError, match=r"^\[origin\] port: expected an integer 0\.\.65535, got true$"):
        load(f, env={"TONEARM_ORIGIN_PORT": "9000"})


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"TONEARM_ORIGIN_PORT": "abc"},
         '[origin] port (TONEARM_ORIGIN_PORT): expected an integer 0..65535, got "abc"'),
        ({"TONEARM_ORIGIN_PORT": "70000"},
         '[origin] port (TONEARM_ORIGIN_PORT): expected an integer 0..65535, got "70000"'),
        ({"TONEARM_ORIGIN_WORKERS": "1.5"},
         '[origin] workers (TONEARM_ORIGIN_WORKERS): expected an integer >= 1, got "1.5"'),
        ({"TONEARM_ORIGIN_REQUIRE_SIGNED": "maybe"},
         '[origin] require_signed (TONEARM_ORIGIN_REQUIRE_SIGNED): expected true or false, got "maybe"'),
        ({"TONEARM_FFMPEG_TIMEOUT": "-1"},
         '[ffmpeg] timeout (TONEARM_FFMPEG_TIMEOUT): expected a number > 0, got "-1"'),
        ({"TONEARM_STORAGE_BACKEND": "gcs"},
         '[storage] backend (TONEARM_STORAGE_BACKEND): expected one of "local", "s3", got "gcs"'),
        ({"TONEARM_ORIGIN_PORT": "80\n81"},  # a hostile value stays on one line
         '[origin] port (TONEARM_ORIGIN_PORT): expected an integer 0..65535, got "80\\n81"'),
    ],
)
def test_environment_values_that_do_not_parse_name_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert str(info.value) == expected


def test_environment_strings_are_parsed_by_the_schema() -> None:
    for text, value in [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False),
                        ("no", False), ("Off", False)]:
        assert load(env={"TONEARM_LADDER_LOSSLESS": text}).ladder.lossless is value, text
    cfg = load(env={"TONEARM_ORIGIN_PORT": "9000", "TONEARM_ORIGIN_KEEPALIVE_TIMEOUT": "2.5",
                    "TONEARM_LADDER_LAYOUTS": " single , segmented,", "TONEARM_STORAGE_ROOT": "/srv/x",
                    "TONEARM_DATA": "/srv/ignored"})
    assert (cfg.origin.port, cfg.origin.keepalive_timeout) == (9000, 2.5)
    assert cfg.ladder.layouts == ("single", "segmented")
    assert cfg.storage.root == Path("/srv/x")  # the specific variable beats the TONEARM_DATA shortcut


def test_flag_overrides_are_python_values_checked_by_the_schema() -> None:
    assert load(env={}, overrides={"origin": {"port": 9001, "host": None}}).origin.port == 9001
    for overrides, expected in [({"origin": {"port": True}}, "[origin] port: expected an integer 0..65535, got true"),
                                ({"origin": {"workers": 0}}, "[origin] workers: expected an integer >= 1, got 0"),
                                ({"orign": {"port": 1}}, "unknown config section [orign]")]:
        with pytest.raises(ConfigError) as info:
            load(env={}, overrides=overrides)
        assert str(info.value).startswith(expected)


def test_validate_checks_a_config_built_in_code() -> None:
    from tonearm.core.config import Config, OriginConfig, validate

    assert validate(Config()) == Config()
    with pytest.raises(ConfigError, match=r"^\[origin\] port: expected an integer 0\.\.65535, got 70000$"):
        validate(Config(origin=OriginConfig(port=70000)))


def test_config_error_is_a_tonearm_error_with_a_stable_code() -> None:
    from tonearm.core.errors import TonearmError

    with pytest.raises(ConfigError) as info:
        load(env={"TONEARM_ORIGIN_PORT": "abc"})
    assert isinstance(info.value, TonearmError) and isinstance(info.value, ValueError)
    assert info.value.code == "config_invalid"


def test_the_config_types_are_frozen_schema_structs() -> None:
    import pickle

    import msgspec

    from tonearm.core.config import LadderConfig
    from tonearm.core.model import Rung

    cfg = load(env={})
    assert isinstance(cfg, msgspec.Struct) and isinstance(cfg.ladder, LadderConfig)
    with pytest.raises(AttributeError):
        cfg.origin.port = 1  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # worker processes receive it
    assert hash(cfg.ladder.rungs[0]) == hash(Rung(name="aac_256k", codec="aac", bitrate=256_000))
    assert msgspec.structs.replace(cfg, ladder=LadderConfig(lossless=True)).ladder.all_rungs[-1].codec == "flac"


# -- one codec table, one layout table ---------------------------------------------------------------------------


def test_rungs_are_checked_against_the_codec_table(tmp_path: Path, monkeypatch) -> None:
    from tonearm.core import codecs

    lossless = load(None, env={}, overrides={"ladder": {"rungs": [{"name": "lossless", "codec": "flac"}]}})
    assert lossless.ladder.rungs[0].bitrate is None  # a lossless rung has no bit rate, and none is needed
    assert "flac" in _error(tmp_path, "[ladder]\nrungs = [{name = 'f', codec = 'flac', bitrate = 900000}]\n")
    message = _error(tmp_path, "[ladder]\nrungs = [{name = 'a', codec = 'aac'}]\n")
    assert message.startswith("[ladder] rungs[0].bitrate:") and "8000..512000" in message, message
    monkeypatch.setitem(codecs.CODECS, "aac", dataclasses.replace(codecs.CODECS["aac"], bitrates=(8000, 320000)))
    message = _error(tmp_path, "[ladder]\nrungs = [{name = 'a', codec = 'aac', bitrate = 400000}]\n")
    assert message.startswith("[ladder] rungs[0].bitrate:") and "8000..320000" in message, message
    monkeypatch.setitem(codecs.CODECS, "alac", dataclasses.replace(codecs.CODECS["flac"], name="alac", encoder="alac"))
    message = _error(tmp_path, "[ladder]\nrungs = [{name = 'x', codec = 'mp3', bitrate = 96000}]\n")
    assert message.startswith("[ladder] rungs[0].codec:") and "aac, opus, flac, alac" in message, message
    assert load(None, env={}, overrides={"ladder": {"rungs": [{"name": "a", "codec": "alac"}]}}).ladder.rungs


def test_the_segment_grid_and_rung_rules_come_from_the_tables(tmp_path: Path) -> None:
    from tonearm.core import codecs, config, layouts

    assert config.ALIGNMENT_SAMPLES is codecs.ALIGNMENT_SAMPLES  # not a copy of its own
    assert config.RESERVED_RUNG_NAMES is layouts.RESERVED_RUNG_NAMES
    for name in sorted(layouts.RESERVED_RUNG_NAMES):
        rung = f"{{name = '{name}', codec = 'aac', bitrate = 96000}}"
        assert "reserved" in _error(tmp_path, f"[ladder]\nrungs = [{rung}]\n")
    message = _error(tmp_path, "[ladder]\nlayouts = ['segmented', 'hls']\n")
    assert message.startswith("[ladder] layouts:") and all(n in message for n in layouts.LAYOUTS), message
    assert "multiple of 0.32" in _error(tmp_path, "[ladder]\nsegment_duration = nan\n")
    assert "multiple of 0.32" in _error(tmp_path, "[ladder]\nsegment_duration = inf\n")
    message = _error(tmp_path, "[ladder]\nrungs = [{name = 'a', codec = 'aac', bitrate = 96000, sample_rate = 44100}]")
    assert message.startswith("[ladder] rungs[0].sample_rate:") and "48000" in message, message
    assert "duplicate" in _error(tmp_path, "[ladder]\nlossless = true\nrungs = [{name = 'flac', codec = 'flac'}]\n")


# -- through the real command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, env, key",
    [
        ('[ladder]\nrungs = [{name = "a", codec = "aac", bitrate = "96000"}]\n', {}, "[ladder] rungs[0].bitrate"),
        ("[origin]\nport = true\n", {}, "[origin] port"),
        ("[origin]\nprot = 1\n", {}, "[origin] prot"),
        ("[nope]\n", {}, "[nope]"),
        ("[ladder]\nsegment_duration = 6.0\n", {}, "[ladder] segment_duration"),
        ("", {"TONEARM_ORIGIN_PORT": "abc"}, "TONEARM_ORIGIN_PORT"),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    proc = subprocess.run([str(TONEARM), "--config", str(f), "doctor"], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("tonearm: configuration error: ") and key in lines[0] and "Traceback" not in proc.stderr
