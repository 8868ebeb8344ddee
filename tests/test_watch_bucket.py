"""Bucket watching against a real S3 server: listing with a persisted cursor across restarts, objects taken
only once their size and ETag held across two listings, temporary names ignored, the move policy (published
to done/, quarantined to rejected/, neither taken again).

The S3 server is the ``s3`` fixture below: conftest's ``swift_server``, a real OpenStack Swift with
s3api, whose credentials are in the environment while it runs.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import msgspec
import pytest
from fixtures_intake import Workers, intake_config, intake_toml, make_master, sha256

from tonearm.app.jobs import open_queue
from tonearm.app.watch import run_watch, state_path
from tonearm.app.watch_bucket import BucketSource
from tonearm.app.watch_folder import Settler
from tonearm.app.watch_ledger import Ledger

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(swift_server):  # the one line to change for another S3 server: def s3(swift_server): return swift_server
    return swift_server


@pytest.fixture
def bucket(s3) -> tuple[str, object, str]:
    name = f"drop-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3.base_url, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client, s3.base_url


def config(tmp_path: Path, endpoint: str, pg_url: str = "", **watch):
    sections = {"storage": {"s3_endpoint_url": endpoint}, "watch": {"settle_s": 0.2, "rescan_s": 0.3, **watch}}
    return intake_config(tmp_path / "data", catalog_url=pg_url, **sections)


def workers(tmp_path: Path, endpoint: str, pg_url: str, **watch) -> Workers:
    """One real worker on the test's PostgreSQL database (it reads s3:// sources from the same server)."""
    sections = {"storage": {"s3_endpoint_url": endpoint}, "watch": {"settle_s": 0.2, "rescan_s": 0.3, **watch}}
    return Workers(intake_toml(tmp_path / "tonearm.toml", tmp_path / "data", catalog_url=pg_url, **sections), n=1)


def keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()))


def test_cursor_survives_a_restart_and_objects_are_taken_once(tmp_path: Path, bucket, pg_url: str) -> None:
    name, client, endpoint = bucket
    cfg = config(tmp_path, endpoint, pg_url)
    with workers(tmp_path, endpoint, pg_url):
        cursor_across_restart(tmp_path, cfg, name, client)


def cursor_across_restart(tmp_path: Path, cfg, name: str, client) -> None:
    a = make_master(tmp_path / "a.wav", freq=700)
    c = make_master(tmp_path / "c.wav", freq=710)
    client.upload_file(str(a), name, "in/2026/a.wav")
    client.put_object(Bucket=name, Key="in/2026/b.wav.part", Body=b"half")  # an upload tool's temporary name
    client.put_object(Bucket=name, Key="elsewhere/x.wav", Body=a.read_bytes())  # outside the prefix
    url = f"s3://{name}/in"
    run_watch(cfg, [url], once=True, report=lambda ln: None)
    q = open_queue(cfg)
    try:
        jobs = q.wait([j.id for j in q.list(limit=100)], timeout=120)  # PostgreSQL, after = leave: only enqueued
        assert [(j.origin, j.source, j.state.value, j.asset_id) for j in jobs] == [
            ("bucket", f"s3://{name}/in/2026/a.wav", "published", sha256(a))]
    finally:
        q.close()
    ledger = Ledger(state_path(cfg))
    assert ledger.cursor(f"s3://{name}/in/") == "2026/a.wav"  # the last key up to which all were taken
    # restarted: the listing resumes after the cursor (the request says so), a new key is taken, no old one
    client.upload_file(str(c), name, "in/2026/c.wav")
    src = BucketSource.from_url(url, cfg)
    src.advance(ledger, [])
    assert [s.key for s in src.listing(full=False)] == ["2026/c.wav"]
    assert [s.key for s in src.listing(full=True)] == ["2026/a.wav", "2026/c.wav"]
    ledger.close()
    # the restarted watcher moves what it takes (after = move): published to done/, rejected to rejected/
    client.put_object(Bucket=name, Key="in/2026/d-junk.wav", Body=b"not audio at all" * 64)
    lines: list[str] = []
    moving = msgspec.structs.replace(cfg, watch=msgspec.structs.replace(cfg.watch, after="move"))
    run_watch(moving, [url], once=True, report=lines.append)
    assert sorted(ln.split()[1] for ln in lines if ln.startswith("taken")) == [f"s3://{name}/in/2026/c.wav",
                                                                               f"s3://{name}/in/2026/d-junk.wav"]
    q = open_queue(cfg)
    try:
        done = q.wait([j.id for j in q.list(limit=100)], timeout=120)
        assert sorted((j.state.value, j.asset_id or "") for j in done if j.state.value == "published") == sorted(
            [("published", sha256(a)), ("published", sha256(c))])
        assert sorted(j.state.value for j in done) == ["published", "published", "quarantined"]
    finally:
        q.close()
    # a.wav's job was still open in the ledger (the first watcher only enqueued): the policy reaches it too
    assert keys(client, name) == sorted(["elsewhere/x.wav", "in/2026/b.wav.part", "in/done/2026/a.wav",
                                         "in/done/2026/c.wav", "in/rejected/2026/d-junk.wav"])
    assert client.get_object(Bucket=name, Key="in/done/2026/c.wav")["Body"].read() == c.read_bytes()
    run_watch(moving, [url], once=True, report=lines.append)  # done/ and rejected/ are never taken again
    q = open_queue(cfg)
    try:
        assert len(q.list(limit=100)) == 3
    finally:
        q.close()


def listing_with(src: BucketSource, key: str, size: int, timeout: float = 10.0) -> list:
    """A full listing once it shows ``key`` at ``size``: Swift updates container listings after the PUT
    has answered (eventually consistent), so a listing taken at once may still show the old object."""
    deadline = time.monotonic() + timeout
    while True:
        listing = list(src.listing(full=True))
        if any(o.key == key and o.size == size for o in listing) or time.monotonic() > deadline:
            return listing
        time.sleep(0.05)


def test_an_object_overwritten_between_listings_waits_for_a_stable_etag(tmp_path: Path, bucket) -> None:
    name, client, endpoint = bucket
    cfg = config(tmp_path, endpoint)
    src = BucketSource.from_url(f"s3://{name}/", cfg)
    settler = Settler(0.0)
    client.put_object(Bucket=name, Key="x.wav", Body=b"first version")
    assert settler.observe(listing_with(src, "x.wav", len(b"first version"))) == []
    client.put_object(Bucket=name, Key="x.wav", Body=b"second version, longer")
    # the ETag changed: the wait starts again
    assert settler.observe(listing_with(src, "x.wav", len(b"second version, longer"))) == []
    # Ready from the next listing that shows it unchanged, once the wall clock has passed its LastModified
    # (Swift's s3api rounds it up to the next second, so allow that second).
    deadline = time.monotonic() + 3
    while not (ready := settler.observe(src.listing(full=True))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(s.key, s.size) for s in ready] == [("x.wav", len(b"second version, longer"))]
