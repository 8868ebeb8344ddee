"""Jobs on a real PostgreSQL run by real ``tonearm worker`` processes (procrastinate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_queue import pool, setup  # noqa: F401, F811 - fixtures, requested by name
from fixtures_queue import Workers, make_master, queue_setup, wait_for, workers

from tonearm.app.jobs import JobState, open_queue
from tonearm.core.catalog_open import open_catalog
from tonearm.core.model import AssetState

# real worker processes and whole-pipeline runs: make test, not make test-fast
pytestmark = pytest.mark.slow


def test_two_workers_publish_each_asset_once(setup: tuple, pool: Workers, tmp_path: Path) -> None:
    cfg, _env, queue = setup
    masters = [make_master(tmp_path / f"m{i}.flac", seconds=3, freq=300 + 100 * i) for i in range(4)]
    pool.start()
    pool.start()
    wait_for(lambda: queue.stats()["workers"] == 2, 60, "both workers to register")  # neither starts first
    jobs = [queue.submit(str(m), priority=i) for i, m in enumerate(masters)]
    assert all(j.state in (JobState.QUEUED, JobState.VALIDATING) and j.asset_id for j in jobs)
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


def test_a_transient_storage_error_is_retried_with_backoff_then_failed(tmp_path: Path, pg_url: str) -> None:
    """A bucket that refuses connections (an endpoint on a closed loopback port): storage_error is
    transient, so the job runs [jobs] retry_attempts times, waiting longer each time, then fails."""
    from fixtures_pg import free_port

    cfg, env = queue_setup(tmp_path, pg_url, retry_attempts=3, retry_base_s=0.5)
    env.update(TONEARM_STORAGE_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="x",
               AWS_SECRET_ACCESS_KEY="y", AWS_MAX_ATTEMPTS="1")
    queue = open_queue(cfg)
    job = queue.submit("s3://masters/incoming/a.flac", origin="bucket")
    assert job.asset_id is None and job.filename == "a.flac"
    for pool in workers(env, tmp_path):
        pool.start()
        done = queue.wait([job.id], timeout=120)[0]
    assert done.state is JobState.FAILED and done.error_code == "storage_error", (done.state, done.error_code)
    assert done.attempts == 3 and "cannot fetch s3://masters/incoming/a.flac" in done.error_message
    # each retry waited out its backoff (0.5 s, then 1 s) between its deferral and its next start
    rows = queue.db.run(lambda db: db.execute(
        "SELECT e.type, extract(epoch from e.at) FROM procrastinate_events e JOIN tonearm_jobs j ON j.pq_id = e.job_id"
        " WHERE j.id=%s AND e.type IN ('started', 'deferred_for_retry') ORDER BY e.id", (job.id,)).fetchall())
    kinds = [r[0] for r in rows]
    assert kinds == ["started", "deferred_for_retry", "started", "deferred_for_retry", "started"], kinds
    at = [float(r[1]) for r in rows]
    assert at[2] - at[1] >= 0.5 and at[4] - at[3] >= 1.0, at
    assert [e.type for e in queue.events_since(0)] == ["failed"]
    queue.close()


def test_taken_down_bytes_from_a_bucket_are_refused_once_fetched_unless_forced(
        tmp_path: Path, pg_url: str, swift_server) -> None:
    """A bucket master is not hashed at submit: the job hashes it once fetched and refuses bytes
    that were taken down (code asset_taken_down, not retried); a forced submit publishes them again."""
    import uuid

    import boto3

    from tonearm.app.jobs import Tombstoned

    cfg, env = queue_setup(tmp_path, pg_url)
    env["TONEARM_STORAGE_S3_ENDPOINT_URL"] = swift_server.base_url
    client = boto3.client("s3", endpoint_url=swift_server.base_url, region_name="us-east-1")
    bucket = f"masters-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    master = make_master(tmp_path / "a.flac", seconds=2)
    client.upload_file(str(master), bucket, "in/a.flac")
    queue = open_queue(cfg)
    for pool in workers(env, tmp_path):
        pool.start()
        first = queue.wait([queue.submit(f"s3://{bucket}/in/a.flac", origin="bucket").id], timeout=90)[0]
        assert first.state is JobState.PUBLISHED and first.asset_id, (first.state, first.error_message)
        queue.take_down(first.asset_id)
        with pytest.raises(Tombstoned):
            queue.submit(str(master))  # a local copy is hashed at submit and refused there
        again = queue.wait([queue.submit(f"s3://{bucket}/in/a.flac", origin="bucket").id], timeout=90)[0]
        assert again.state is JobState.FAILED and again.error_code == "asset_taken_down" and again.attempts == 1
        assert again.asset_id == first.asset_id
        forced = queue.wait([queue.submit(str(master), force=True).id], timeout=90)[0]
        assert forced.state is JobState.PUBLISHED and not queue.is_tombstoned(first.asset_id)
    assert [e.type for e in queue.events_since(0)] == ["published", "taken_down", "failed", "published"]
    queue.close()
