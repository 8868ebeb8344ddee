"""The [watch] and [webhooks] sections: defaults, environment, and every bad value named in one line."""

from __future__ import annotations

import pytest

from tonearm.core.config import ConfigError, load

SECRET = "s" * 32


def test_defaults_and_environment() -> None:
    cfg = load(None, env={})
    assert cfg.watch.after == "leave" and cfg.watch.settle_s == 5.0 and "*.part" in cfg.watch.ignore
    assert cfg.webhooks.urls == () and cfg.webhooks.retry_for_s == 86400.0
    cfg = load(None, env={"TONEARM_WATCH_SETTLE_S": "0.5", "TONEARM_WATCH_AFTER": "move",
                          "TONEARM_WATCH_IGNORE": "*.part, *.tmp", "TONEARM_WEBHOOKS_URLS": "https://hooks.example/t",
                          "TONEARM_WEBHOOKS_SECRET": SECRET})
    assert cfg.watch.settle_s == 0.5 and cfg.watch.after == "move" and cfg.watch.ignore == ("*.part", "*.tmp")
    assert cfg.webhooks.urls == ("https://hooks.example/t",)


@pytest.mark.parametrize(("section", "values", "message"), [
    ("watch", {"after": "shred"}, '[watch] after: expected one of "delete", "leave", "move"'),
    ("watch", {"settle_s": 0}, "[watch] settle_s: expected a number > 0 and <= 3600"),
    ("watch", {"max_depth": 99}, "[watch] max_depth"),
    ("watch", {"ignore": ["a/b"]}, "[watch] ignore: 'a/b'"),
    ("webhooks", {"urls": ["ftp://h/x"], "secret": SECRET}, "use an http:// or https:// URL"),
    ("webhooks", {"urls": ["http://h/x y"], "secret": SECRET}, "spaces or control characters"),
    ("webhooks", {"urls": ["http://h:99999/"], "secret": SECRET}, "not a valid URL"),
    ("webhooks", {"urls": ["https://h/x"], "secret": "short"}, "use at least 32 characters, got 5"),
    ("webhooks", {"events": ["published", "deleted"]}, "'deleted' is not one of"),
    ("webhooks", {"timeout_s": 600}, "[webhooks] timeout_s"),
])
def test_bad_values_are_one_line(section: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env={}, overrides={section: values})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_credentials_in_a_webhook_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env={}, overrides={"webhooks": {"urls": ["https://user:hunter2@hooks.example/"], "secret": SECRET}})
    assert "credentials in the URL are not allowed" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_the_secret_is_never_in_an_error() -> None:
    bad = "p" * 31
    with pytest.raises(ConfigError) as err:
        load(None, env={"TONEARM_WEBHOOKS_SECRET": bad, "TONEARM_WEBHOOKS_URLS": "https://h/"})
    assert bad not in str(err.value) and "got 31" in str(err.value)
