"""Jobs through the management API: a source already in the configured bucket (the real Swift S3 server), what a
source may not be, listing by state and cancellation.  SQLite and PostgreSQL catalogs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import boto3
import pytest
from fixtures_api import api_config, bearer, open_client

BUCKET = "api-jobs"
TERMINAL_NAMES = {"published", "quarantined", "failed", "cancelled"}
pytestmark = pytest.mark.slow  # the Swift S3 server


@pytest.fixture(scope="module")
def bucket(swift_server):
    s3 = boto3.client("s3", endpoint_url=swift_server.base_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="someone-else")
    return s3, swift_server.base_url


@pytest.fixture(params=["sqlite", "postgres"])
async def client(request, tmp_path: Path, bucket, aiohttp_client):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    cfg = api_config(tmp_path / "data", url, ingest={"max_bytes": 1 << 20},
                     storage={"backend": "s3", "s3_bucket": BUCKET, "s3_endpoint_url": bucket[1], "s3_prefix": "media/"})
    client = await open_client(cfg, aiohttp_client)
    client.s3 = bucket[0]
    yield client
    client.close_api()


async def test_a_source_in_the_bucket_is_queued(client) -> None:
    body = os.urandom(1000)
    key = f"drops/{hashlib.sha256(body).hexdigest()[:8]}/take one.flac"
    client.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    k = bearer(client.keys["ingest_read"])
    for source in (key, f"s3://{BUCKET}/{key}"):
        resp = await client.post("/v1/jobs", json={"source": source, "priority": -10}, headers=k)
        assert resp.status == 202, await resp.text()
        job = (await resp.json())["job"]
        assert job["source"] == f"s3://{BUCKET}/{key}" and job["filename"] == "take one.flac"
        assert job["priority"] == -10 and job["origin"] == "api"
    got = await (await client.get(f"/v1/jobs/{job['id']}", headers=k)).json()
    assert got["job"]["id"] == job["id"]


@pytest.mark.parametrize("source, status, code", [
    ("s3://someone-else/a.flac", 400, "foreign_bucket"),
    ("https://example.com/a.flac", 400, "invalid_source"),
    ("file:///etc/passwd", 400, "invalid_source"),
    ("//host/a.flac", 400, "invalid_source"),
    ("/etc/passwd", 400, "invalid_source"),
    ("drops/../media/published/x/asset.json", 400, "invalid_source"),
    ("drops/./a.flac", 400, "invalid_source"),
    ("drops//a.flac", 400, "invalid_source"),
    ("drops\\a.flac", 400, "invalid_source"),
    ("drops/a\x00.flac", 400, "invalid_source"),
    ("media/published/" + "c" * 64 + "/asset.json", 400, "invalid_source"),
    ("drops/" + "x" * 1100, 400, "invalid_source"),
    ("drops/missing.flac", 404, "source_not_found"),
    (42, 400, "invalid_source"),
])
async def test_sources_outside_the_bucket_or_odd_keys_are_refused(client, source, status, code) -> None:
    resp = await client.post("/v1/jobs", json={"source": source}, headers=bearer(client.keys["ingest"]))
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (status, code), body


async def test_an_object_over_max_bytes_or_empty_is_refused(client) -> None:
    client.s3.put_object(Bucket=BUCKET, Key="drops/huge.wav", Body=b"x" * ((1 << 20) + 1))
    client.s3.put_object(Bucket=BUCKET, Key="drops/empty.wav", Body=b"")
    k = bearer(client.keys["ingest"])
    resp = await client.post("/v1/jobs", json={"source": "drops/huge.wav"}, headers=k)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    resp = await client.post("/v1/jobs", json={"source": "drops/empty.wav"}, headers=k)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "empty_file"


@pytest.fixture(scope="module")
def long_master(tmp_path_factory) -> bytes:
    from fixtures_queue import make_master

    return make_master(tmp_path_factory.mktemp("m") / "long.flac", seconds=40.0, freq=311.0).read_bytes()


async def test_list_by_state_and_cancel(client, long_master) -> None:
    """SQLite: the API's own pool is running the job when the DELETE comes; PostgreSQL (no worker): still queued.
    Either way the job ends cancelled, and ?state= lists exactly the jobs in that state."""
    k = bearer(client.keys["ingest_read"])
    client.s3.put_object(Bucket=BUCKET, Key="drops/long.flac", Body=long_master)
    resp = await client.post("/v1/jobs", json={"source": "drops/long.flac"}, headers=k)
    target = (await resp.json())["job"]["id"]
    others = []
    for i in range(2):
        client.s3.put_object(Bucket=BUCKET, Key=f"drops/c{i}.flac", Body=os.urandom(500))
        others.append((await (await client.post("/v1/jobs", json={"source": f"drops/c{i}.flac"}, headers=k)).json()
                       )["job"]["id"])
    resp = await client.delete(f"/v1/jobs/{target}", headers=k)
    assert resp.status == 200
    deadline = asyncio.get_running_loop().time() + 60
    while (state := (await (await client.get(f"/v1/jobs/{target}", headers=k)).json())["job"]["state"]) \
            not in TERMINAL_NAMES and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert state == "cancelled"
    for wanted in ("cancelled", "queued", "quarantined"):
        listed = (await (await client.get(f"/v1/jobs?state={wanted}", headers=k)).json())["jobs"]
        assert {j["state"] for j in listed} <= {wanted}
        assert (target in {j["id"] for j in listed}) == (wanted == "cancelled")
    every = {j["id"] for j in (await (await client.get("/v1/jobs", headers=k)).json())["jobs"]}
    assert {target, *others} <= every
    again = await client.delete(f"/v1/jobs/{target}", headers=k)  # cancelling an ended job changes nothing
    assert again.status == 200 and (await again.json())["job"]["state"] == "cancelled"
    missing = await client.delete("/v1/jobs/doesnotexist", headers=k)
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "job_not_found"


async def test_uploads_go_to_the_bucket_with_s3_storage_and_are_swept_after_their_job(client) -> None:
    """With S3 storage an upload is put in the bucket, so a worker on any machine can read it."""
    from tonearm.app.api.base import STATE

    body = os.urandom(2000)
    digest = hashlib.sha256(body).hexdigest()
    k = bearer(client.keys["ingest_read"])
    resp = await client.post("/v1/uploads?filename=x.flac", data=body, headers=k)
    assert resp.status == 202, await resp.text()
    job = (await resp.json())["job"]
    key = f"media/uploads/{digest}.flac"
    assert job["source"] == f"s3://{BUCKET}/{key}"
    assert client.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    state = client.app[STATE]
    assert not (state.cfg.upload_dir / "ready" / f"{digest}.flac").exists()  # no local copy kept
    await client.delete(f"/v1/jobs/{job['id']}", headers=k)  # PostgreSQL: no worker here; SQLite: ends anyway
    deadline = asyncio.get_running_loop().time() + 30
    while (await (await client.get(f"/v1/jobs/{job['id']}", headers=k)).json())["job"]["state"] not in \
            TERMINAL_NAMES and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert await asyncio.to_thread(state.uploads.sweep) >= 1
    assert client.s3.list_objects_v2(Bucket=BUCKET, Prefix=key)["KeyCount"] == 0


async def test_takedown_cancels_the_live_jobs_of_the_asset(client, long_master) -> None:
    k = bearer(client.keys["admin"])
    resp = await client.post("/v1/uploads?filename=long.flac", data=long_master, headers=k)
    job = (await resp.json())["job"]
    assert job["asset_id"] == hashlib.sha256(long_master).hexdigest()
    down = await (await client.delete(f"/v1/assets/{job['asset_id']}", headers=k)).json()
    assert down["cancelled_jobs"] == [job["id"]] and down["asset"]["was_published"] is False
    deadline = asyncio.get_running_loop().time() + 60
    while (state := (await (await client.get(f"/v1/jobs/{job['id']}", headers=k)).json())["job"]["state"]) \
            not in TERMINAL_NAMES and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert state == "cancelled"
    asset = await (await client.get(f"/v1/assets/{job['asset_id']}", headers=k)).json()
    assert asset["asset"]["state"] == "taken_down"


async def test_takedown_on_s3_stops_a_running_origin_serving_from_the_bucket(bucket, tmp_path, aiohttp_client
                                                                              ) -> None:
    """The same takedown with the published tree in the bucket: ``tonearm serve`` on S3 answers 404 for every
    file within its recheck window, and the bucket holds nothing of the asset (one catalog backend: the
    storage is what this is about)."""
    cfg = api_config(tmp_path / "data", "", storage={"backend": "s3", "s3_bucket": BUCKET,
                                                     "s3_endpoint_url": bucket[1], "s3_prefix": "media/"})
    client = await open_client(cfg, aiohttp_client)
    client.s3 = bucket[0]
    try:
        await _s3_takedown(client, tmp_path)
    finally:
        client.close_api()


async def _s3_takedown(client, tmp_path) -> None:
    import shutil
    import time

    import requests
    from fixtures_origin import make_ffmpeg_asset
    from fixtures_servers import start_origin

    from origin.sources import REVALIDATE_S
    from tonearm.app.api.base import STATE

    state = client.app[STATE]
    local = tmp_path / "local"
    asset = make_ffmpeg_asset(local / "published", "s3-takedown")
    staged = state.cfg.storage.root / "staging" / "copy"
    shutil.copytree(local / "published" / asset, staged)
    await asyncio.to_thread(state.storage.publish, asset, staged)
    scfg = state.cfg.storage
    env = {"TONEARM_STORAGE_BACKEND": "s3", "TONEARM_STORAGE_S3_BUCKET": scfg.s3_bucket,
           "TONEARM_STORAGE_S3_ENDPOINT_URL": scfg.s3_endpoint_url, "TONEARM_STORAGE_S3_PREFIX": scfg.s3_prefix}
    origin = await asyncio.to_thread(start_origin, tmp_path / "origin-root", env=env)
    try:
        files = ["master.m3u8", "manifest.mpd", "asset.json", "aac_128k/index.m3u8", "aac_128k/init.mp4",
                 "aac_128k/seg-00001.m4s", "single/aac_128k.mp4"]
        urls = [f"{origin.base_url}/assets/{asset}/{f}" for f in files]

        broken: list[str] = []

        def statuses() -> set[int]:
            seen = set()
            with requests.Session() as s:
                for u in urls:
                    try:
                        seen.add(s.get(u, timeout=10).status_code)
                    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):  # cut mid-body
                        broken.append(u)
                        seen.add(0)
            return seen

        assert await asyncio.to_thread(statuses) == {200}
        t0 = time.monotonic()  # the DELETE runs while a player keeps fetching: it answers once the media are gone
        delete = asyncio.ensure_future(client.delete(f"/v1/assets/{asset}", headers=bearer(client.keys["admin"])))
        while (seen := await asyncio.to_thread(statuses)) != {404} and time.monotonic() - t0 < 2 * REVALIDATE_S + 3:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        resp = await delete
        assert resp.status == 200 and (await resp.json())["asset"]["was_published"] is True
        assert seen == {404} and elapsed <= 2 * REVALIDATE_S + 0.75, (seen, elapsed)
        assert broken == []  # the media outlived the origin's recheck window: no response was cut mid-body
        print(f"s3 takedown: all {len(urls)} files 404 {elapsed:.2f} s after the DELETE was sent, none cut")
        left = client.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"media/published/{asset}/")["KeyCount"]
        assert left == 0
    finally:
        origin.stop()
