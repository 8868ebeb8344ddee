"""Jobs on a real PostgreSQL run by real ``tonearm worker`` processes (procrastinate)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fixtures_queue import Workers, make_master, queue_setup, workers

from tonearm.app.jobs import JobState, open_queue
from tonearm.core.catalog_open import open_catalog
from tonearm.core.model import AssetState


@pytest.fixture
def setup(tmp_path: Path, pg_url: str) -> Iterator[tuple]:
    cfg, env = queue_setup(tmp_path, pg_url)
    queue = open_queue(cfg)
    yield cfg, env, queue
    queue.close()


@pytest.fixture
def pool(setup: tuple, tmp_path: Path) -> Iterator[Workers]:
    yield from workers(setup[1], tmp_path)


def test_two_workers_publish_each_asset_once(setup: tuple, pool: Workers, tmp_path: Path) -> None:
    cfg, _env, queue = setup
    masters = [make_master(tmp_path / f"m{i}.flac", seconds=3, freq=300 + 100 * i) for i in range(4)]
    jobs = [queue.submit(str(m), priority=i) for i, m in enumerate(masters)]
    assert all(j.state is JobState.QUEUED and j.asset_id for j in jobs)
    pool.start()
    pool.start()
    done = queue.wait([j.id for j in jobs], timeout=120)
    assert [j.state for j in done] == [JobState.PUBLISHED] * 4, [(j.state, j.error_code, j.error_message) for j in done]
    catalog = open_catalog(cfg)
    assert {j.asset_id for j in done} == {r.id for r in catalog.list(state=AssetState.PUBLISHED)}
    events = queue.events_since(0)
    assert sorted(e.asset_id for e in events if e.type == "published") == sorted(j.asset_id for j in done)
    assert all(j.attempts == 1 for j in done)
    ran_on = queue.db.run(lambda db: db.execute("SELECT DISTINCT worker FROM tonearm_jobs").fetchall())
    assert len(ran_on) == 2, ran_on  # both workers took jobs
    published = list((tmp_path / "data" / "published").glob("*/*/asset.json")) or \
        list((tmp_path / "data" / "published").rglob("asset.json"))
    assert len(published) == 4
    ran = "".join(pool.log(i) for i in range(2))
    assert ran.count("Traceback") == 0, ran
