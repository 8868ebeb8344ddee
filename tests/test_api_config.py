"""The [api] section: defaults, environment, ranges named in one line (as tests/test_config.py)."""

from pathlib import Path

import pytest

from tonearm.core.config import ConfigError, load


def test_api_defaults_and_the_upload_dir() -> None:
    cfg = load(env={})
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 8081)
    assert cfg.api.port != cfg.origin.port  # never the origin's port by default
    assert cfg.api.max_body == 64 << 10 and cfg.api.read_chunk == 1 << 20 and cfg.api.tus_expiry == 86400
    assert cfg.upload_dir == Path("data") / "uploads"
    assert load(env={"TONEARM_API_UPLOAD_DIR": "/srv/up"}).upload_dir == Path("/srv/up")


def test_api_environment_and_flags() -> None:
    cfg = load(env={"TONEARM_API_PORT": "9100", "TONEARM_API_READ_CHUNK": "65536"}, overrides={"api": {"host": "::1"}})
    assert (cfg.api.host, cfg.api.port, cfg.api.read_chunk) == ("::1", 9100, 65536)


@pytest.mark.parametrize("toml, expected", [
    ("[api]\nread_chunk = 10\n", r"\[api\] read_chunk: expected an integer 4096..67108864, got 10"),
    ("[api]\nmax_body = 1000000000\n", r"\[api\] max_body: expected an integer 1024..16777216"),
    ("[api]\nmax_header = 100\n", r"\[api\] max_header: expected an integer 1024..65536"),
    ("[api]\ntus_expiry = 1\n", r"\[api\] tus_expiry"),
    ("[api]\nport = 70000\n", r"\[api\] port"),
    ("[api]\nprot = 1\n", "unknown key"),
])
def test_api_bad_values_are_one_line_naming_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=expected) as exc:
        load(path, env={})
    assert "\n" not in str(exc.value)
