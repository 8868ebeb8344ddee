"""[catalog] url and [jobs]: parsed from file and environment, checked, and never echoing a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from tonearm.core.catalog_open import open_catalog
from tonearm.core.catalog_pg import redact
from tonearm.core.config import ConfigError, load


def test_catalog_url_from_the_environment_and_the_default(tmp_path: Path) -> None:
    assert load(None, env={}).catalog.url == "" and load(None, env={}).catalog_path == Path("data/catalog.sqlite3")
    cfg = load(None, env={"TONEARM_CATALOG_URL": f"sqlite:///{tmp_path}/c.db"})
    assert cfg.catalog_path == tmp_path / "c.db" and not cfg.catalog.is_postgres
    open_catalog(cfg).claim("a" * 64, "x.flac")
    assert (tmp_path / "c.db").is_file()  # the URL's file, not the data dir's
    pg = load(None, env={"TONEARM_CATALOG_URL": "postgresql://tonearm:s3cret@db.example:5432/tonearm"})
    assert pg.catalog.is_postgres
    assert redact(pg.catalog.url) == "postgresql://tonearm:***@db.example:5432/tonearm"


@pytest.mark.parametrize("url", ["mysql://u:hunter2@h/db", "sqlite:///", "sqlite://relative", "postgresql://h/db\nx",
                                 "http://u:hunter2@h/"])
def test_a_bad_catalog_url_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(None, env={"TONEARM_CATALOG_URL": url})
    assert "[catalog] url" in str(exc.value) and "hunter2" not in str(exc.value)


def test_jobs_settings_are_checked(tmp_path: Path) -> None:
    cfg = load(None, env={"TONEARM_JOBS_MAX_DEATHS": "5", "TONEARM_JOBS_STALLED_S": "12.5"})
    assert cfg.jobs.max_deaths == 5 and cfg.jobs.stalled_s == 12.5 and cfg.jobs.retry_attempts == 5
    for env, needle in [({"TONEARM_JOBS_MAX_DEATHS": "0"}, "max_deaths"),
                        ({"TONEARM_JOBS_CONCURRENCY": "-1"}, "concurrency"),
                        ({"TONEARM_JOBS_STALLED_S": "3", "TONEARM_JOBS_HEARTBEAT_S": "2"}, "stalled_s"),
                        ({"TONEARM_JOBS_RETRY_BASE_S": "fast"}, "retry_base_s")]:
        with pytest.raises(ConfigError, match=needle):
            load(None, env=env)
    toml = tmp_path / "t.toml"
    toml.write_text('[jobs]\nunknown_key = 1\n')
    with pytest.raises(ConfigError, match="unknown_key"):
        load(toml, env={})


def test_the_worker_refuses_a_sqlite_catalog() -> None:
    from tonearm.app.worker import run_worker

    with pytest.raises(ConfigError, match="postgresql"):
        run_worker(load(None, env={}))
