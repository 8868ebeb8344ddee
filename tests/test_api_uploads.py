"""Uploads to the management API: the plain POST (streamed, hashed, bounded), the size limit (413, nothing
left behind), memory bounded while 200 MB go through a real ``tonearm api`` process, and tus resumption
with a real tus client (tuspy), across a broken connection and a restart of the API."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from fixtures_api import api_config, bearer, make_keys, open_client, rss_kib, start_api, tree_files

from tonearm.app.api.base import STATE

LIMIT = 1 << 20  # max_bytes of the in-process app: small, so 413 is cheap to reach
CHUNK = 64 << 10


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request, tmp_path: Path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    return api_config(tmp_path / "data", url, ingest={"max_bytes": LIMIT}, api={"read_chunk": CHUNK})


@pytest.fixture
async def client(cfg, aiohttp_client):
    client = await open_client(cfg, aiohttp_client)
    yield client
    client.close_api()


async def test_upload_is_hashed_and_queued_once_per_content(client) -> None:
    body = os.urandom(300_000)
    digest = hashlib.sha256(body).hexdigest()
    k = bearer(client.keys["ingest_read"])
    resp = await client.post("/v1/uploads?filename=song%20one.flac&priority=10", data=body, headers=k)
    assert resp.status == 202, await resp.text()
    job = (await resp.json())["job"]
    assert job["asset_id"] == digest and job["filename"] == "song one.flac" and job["origin"] == "api"
    assert job["priority"] == 10 and job["source"] == "api"  # never the server's path
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    ready = client.cfg.upload_dir / "ready" / f"{digest}.flac"
    assert ready.read_bytes() == body
    again = await (await client.post("/v1/uploads?filename=copy.flac", data=body, headers=k)).json()
    assert again["job"]["asset_id"] == digest
    assert sorted(p.name for p in (client.cfg.upload_dir / "ready").iterdir() if not p.name.endswith(".jobs")) == \
        [ready.name]  # the same bytes are one file
    got = await (await client.get(f"/v1/jobs/{job['id']}", headers=k)).json()
    assert got["job"]["id"] == job["id"]
    listed = await (await client.get("/v1/jobs?limit=10", headers=k)).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    metrics = await (await client.get("/metrics", headers=k)).text()
    assert 'tonearm_api_upload_bytes_total{kind="post"} 600000.0' in metrics
    assert 'tonearm_api_uploads_total{kind="post",outcome="queued"} 2.0' in metrics


async def test_over_max_bytes_is_413_and_nothing_is_left(client) -> None:
    k = bearer(client.keys["ingest"])
    resp = await client.post("/v1/uploads?filename=big.wav", data=b"x" * (LIMIT + 1), headers=k)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"

    async def chunked():  # no Content-Length: refused once the limit is crossed while streaming
        for _ in range(LIMIT // CHUNK + 4):
            yield b"y" * CHUNK

    resp = await client.post("/v1/uploads?filename=big.wav", data=chunked(), headers=k)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    assert tree_files(client.cfg.upload_dir) == []  # no partial file in incoming/, nothing in ready/
    listed = await (await client.get("/v1/jobs", headers=bearer(client.keys["read"]))).json()
    assert listed["jobs"] == []  # and nothing was queued
    ok = await client.post("/v1/uploads?filename=fits.wav", data=b"z" * LIMIT, headers=k)  # exactly the limit
    assert ok.status == 202


async def test_tus_protocol_rules(client) -> None:
    k = {**bearer(client.keys["ingest"]), "Tus-Resumable": "1.0.0"}
    assert (await client.post("/v1/tus", headers={**k, "Tus-Resumable": "0.2.2", "Upload-Length": "10"})).status == 412
    assert (await client.post("/v1/tus", headers={**k, "Upload-Length": str(LIMIT + 1)})).status == 413
    assert (await client.post("/v1/tus", headers={**k, "Upload-Length": "-1"})).status == 400
    assert (await client.post("/v1/tus", headers={**k, "Upload-Length": "5", "Upload-Metadata": "filename !!"}
                              )).status == 400
    created = await client.post("/v1/tus", headers={**k, "Upload-Length": "10",
                                                   "Upload-Metadata": "filename YS53YXY=,priority MTA="})
    assert created.status == 201 and created.headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in created.headers
    url = created.headers["Location"]
    head = await client.head(url, headers=k)
    assert (head.status, head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (200, "0", "10")
    patch = {**k, "Content-Type": "application/offset+octet-stream"}
    assert (await client.patch(url, data=b"abc", headers={**k, "Upload-Offset": "0"})).status == 415
    assert (await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "1"})).status == 409
    first = await client.patch(url, data=b"abcd", headers={**patch, "Upload-Offset": "0"})
    assert first.status == 204 and first.headers["Upload-Offset"] == "4"
    assert (await client.patch(url, data=b"x" * 7, headers={**patch, "Upload-Offset": "4"})).status == 413
    other = {**bearer(client.keys["ingest_read"]), "Tus-Resumable": "1.0.0"}
    assert (await client.head(url, headers=other)).status == 404  # another key does not see it
    last = await client.patch(url, data=b"efghij", headers={**patch, "Upload-Offset": "4"})
    assert last.status == 204 and last.headers["Upload-Offset"] == "10"
    job_id = last.headers["Tonearm-Job-Id"]
    job = (await (await client.get(f"/v1/jobs/{job_id}", headers=other)).json())["job"]
    assert job["asset_id"] == hashlib.sha256(b"abcdefghij").hexdigest() and job["filename"] == "a.wav"
    assert job["priority"] == 10
    assert (await client.head(url, headers=k)).headers["Tonearm-Job-Id"] == job_id  # a lost answer is found again
    gone = await client.post("/v1/tus", headers={**k, "Upload-Length": "10"})
    assert (await client.delete(gone.headers["Location"], headers=k)).status == 204  # termination
    assert (await client.head(gone.headers["Location"], headers=k)).status == 404


async def test_abandoned_tus_uploads_expire(client) -> None:
    k = {**bearer(client.keys["ingest"]), "Tus-Resumable": "1.0.0"}
    url = (await client.post("/v1/tus", headers={**k, "Upload-Length": "10"})).headers["Location"]
    await client.patch(url, data=b"abc", headers={**k, "Upload-Offset": "0",
                                                 "Content-Type": "application/offset+octet-stream"})
    receiver = client.app[STATE].uploads
    assert receiver.sweep(now=time.time() + 10) == 0  # still within [api] tus_expiry
    assert receiver.sweep(now=time.time() + client.cfg.api.tus_expiry + 1) == 1
    assert (await client.head(url, headers=k)).status == 404
    done = (await client.post("/v1/tus", headers={**k, "Upload-Length": "3"})).headers["Location"]
    last = await client.patch(done, data=b"xyz", headers={**k, "Upload-Offset": "0",
                                                         "Content-Type": "application/offset+octet-stream"})
    assert "Tonearm-Job-Id" in last.headers
    assert receiver.sweep(now=time.time() + client.cfg.api.tus_expiry + 1) >= 1  # a complete one's record too
    assert list((client.cfg.upload_dir / "tus").iterdir()) == []


# -- a real `tonearm api` process ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_proc(pg_cluster, tmp_path_factory):
    """``tonearm api`` on a PostgreSQL catalog (jobs only queue: no worker runs them here)."""
    data = tmp_path_factory.mktemp("api") / "data"
    url = pg_cluster.new_database()
    env = {"TONEARM_CATALOG_URL": url, "TONEARM_INGEST_MAX_BYTES": str(300 << 20),
           "TONEARM_API_READ_CHUNK": str(256 << 10)}
    cfg = api_config(data, url)
    keys = make_keys(cfg)
    server = start_api(data, env=env)
    try:
        yield server, keys, cfg
    finally:
        server.stop()
        pg_cluster.drop_database(url)


def _post_stream(base: str, key: str, total: int, piece: int = 1 << 20) -> tuple[int, dict, str]:
    """POST ``total`` random bytes with a Content-Length, written piece by piece; (status, body, sha256)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.putrequest("POST", "/v1/uploads?filename=big.wav")
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Length", str(total))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    h = hashlib.sha256()
    seed = os.urandom(piece)
    for i in range(total // piece):
        data = hashlib.sha256(i.to_bytes(8, "big")).digest() + seed[32:]  # distinct pieces, cheap to make
        h.update(data)
        conn.send(data)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    return resp.status, body, h.hexdigest()


@pytest.mark.slow  # a tonearm api subprocess
def test_a_200_mb_upload_keeps_the_api_process_memory_bounded(api_proc) -> None:
    server, keys, cfg = api_proc
    _post_stream(server.base_url, keys["ingest"], 8 << 20)  # warm up: imports, pools, first allocations
    base = rss_kib(server.pid)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(server.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    try:
        status, body, digest = _post_stream(server.base_url, keys["ingest"], 200 << 20)
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - t0
    assert status == 202, body
    assert body["job"]["asset_id"] == digest  # hashed on the way, every byte
    growth_mib = (peak[0] - base) / 1024
    print(f"200 MiB upload in {seconds:.1f} s; API RSS {base / 1024:.0f} MiB -> peak {peak[0] / 1024:.0f} MiB "
          f"(+{growth_mib:.1f} MiB, read_chunk 256 KiB)")
    assert growth_mib < 24, growth_mib  # a body held in memory would add 200 MiB
    stored = cfg.upload_dir / "ready" / f"{digest}.wav"
    assert stored.stat().st_size == 200 << 20


def _expect(base: str, headers: str) -> tuple[bytes, socket.socket]:
    parts = urlsplit(base)
    raw = socket.create_connection((parts.hostname, parts.port), timeout=10)
    raw.sendall(f"POST /v1/uploads?filename=e.wav HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{headers}\r\n".encode())
    return raw.recv(65536), raw


@pytest.mark.slow  # a tonearm api subprocess
def test_expect_100_continue_refuses_before_the_body_is_sent(api_proc) -> None:
    server, keys, cfg = api_proc
    first, raw = _expect(server.base_url, "Content-Length: 1000\r\n")  # no key
    raw.close()
    assert first.startswith(b"HTTP/1.1 401") and b"100 Continue" not in first
    first, raw = _expect(server.base_url, f"Authorization: Bearer {keys['read']}\r\nContent-Length: 1000\r\n")
    raw.close()
    assert first.startswith(b"HTTP/1.1 403")
    first, raw = _expect(server.base_url, f"Authorization: Bearer {keys['ingest']}\r\nContent-Length: {400 << 20}\r\n")
    raw.close()
    assert first.startswith(b"HTTP/1.1 413") and b'"too_large"' in first
    body = os.urandom(5000)
    first, raw = _expect(server.base_url, f"Authorization: Bearer {keys['ingest']}\r\nContent-Length: {len(body)}\r\n")
    with raw:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        raw.sendall(body)
        answer = raw.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202") and hashlib.sha256(body).hexdigest().encode() in answer


@pytest.mark.slow  # a tonearm api subprocess
def test_the_api_log_names_key_ids_never_keys(api_proc) -> None:
    server, keys, _ = api_proc
    requests.get(server.base_url + "/v1/jobs", headers=bearer(keys["read"]), timeout=10)
    log = server.log()
    assert '"route": "/v1/jobs"' in log
    assert keys["read"].split("_")[1] in log  # the key's id
    for text in keys.values():
        assert text not in log and text.split("_", 2)[2] not in log


def test_negative_control_the_rss_probe_sees_a_body_held_in_memory() -> None:
    """The probe above does see memory a process keeps: a child holding 200 MiB shows it."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(200 << 20); b[::4096] = "
                              "b'x' * len(b[::4096]); print('held', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        base = rss_kib(child.pid)
        assert child.stdout.readline().strip() == "held"
        assert (rss_kib(child.pid) - base) / 1024 > 150
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow  # a tonearm api subprocess
def test_tus_resumes_with_a_real_client_across_a_broken_connection_and_a_restart(api_proc, tmp_path) -> None:
    """Last in this module: it restarts the module's API process."""
    from tusclient import client as tus_client
    from tusclient.storage.filestorage import FileStorage

    server, keys, cfg = api_proc
    master = tmp_path / "master.flac"
    master.write_bytes(os.urandom(5 << 20) + b"end")
    digest = hashlib.sha256(master.read_bytes()).hexdigest()
    store = FileStorage(str(tmp_path / "tus-urls.json"))
    tus = tus_client.TusClient(server.base_url + "/v1/tus", headers=bearer(keys["ingest"]))
    up = tus.uploader(str(master), chunk_size=1 << 20, metadata={"filename": "master.flac"},
                      store_url=True, url_storage=store)
    up.upload_chunk()
    up.upload_chunk()
    assert up.offset == 2 << 20
    upload_path = urlsplit(up.url).path

    # a PATCH whose connection dies after 300,000 of its 1 MiB: what arrived is kept
    parts = urlsplit(server.base_url)
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        raw.sendall((f"PATCH {upload_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['ingest']}\r\n"
                     f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {2 << 20}\r\nContent-Length: {1 << 20}\r\n"
                     "Content-Type: application/offset+octet-stream\r\n\r\n").encode())
        with open(master, "rb") as f:
            f.seek(2 << 20)
            raw.sendall(f.read(300_000))
        time.sleep(0.3)
    head = {**bearer(keys["ingest"]), "Tus-Resumable": "1.0.0"}
    for _ in range(50):
        offset = int(requests.head(server.base_url + upload_path, headers=head, timeout=10).headers["Upload-Offset"])
        if offset > 2 << 20:
            break
        time.sleep(0.1)
    assert offset == (2 << 20) + 300_000

    # the API restarts (its running hash is lost); a new client process resumes from the stored URL
    assert server.stop() == 0  # SIGTERM: a clean exit
    env = {"TONEARM_CATALOG_URL": cfg.catalog.url, "TONEARM_INGEST_MAX_BYTES": str(300 << 20)}
    restarted = start_api(cfg.storage.root, env=env, port=parts.port)  # the same address: the stored URL
    try:
        tus2 = tus_client.TusClient(restarted.base_url + "/v1/tus", headers=bearer(keys["ingest"]))
        up2 = tus2.uploader(str(master), chunk_size=1 << 20, metadata={"filename": "master.flac"},
                            store_url=True, url_storage=store)
        assert urlsplit(up2.url).path == upload_path and up2.offset == offset  # resumed, not restarted
        up2.upload()
        final = requests.head(restarted.base_url + upload_path, headers=head, timeout=10)
        job_id = final.headers["Tonearm-Job-Id"]
        job = requests.get(f"{restarted.base_url}/v1/jobs/{job_id}", headers=bearer(keys["admin"]), timeout=10).json()
        assert job["job"]["asset_id"] == digest  # every byte, in order, exactly once
        assert (cfg.upload_dir / "ready" / f"{digest}.flac").read_bytes() == master.read_bytes()
    finally:
        restarted.stop()


async def test_a_stalled_body_is_cut_and_deeply_nested_json_is_400(client, monkeypatch) -> None:
    from tonearm.app.api import uploads

    monkeypatch.setattr(uploads, "BODY_IDLE_S", 0.5)
    k = bearer(client.keys["ingest"])

    async def trickle():
        yield b"x" * 1000
        await asyncio.sleep(3)
        yield b"y" * 1000

    t0 = time.monotonic()
    resp = await client.post("/v1/uploads?filename=slow.wav", data=trickle(), headers=k)
    assert resp.status == 408 and (await resp.json())["error"]["code"] == "body_timeout"
    assert time.monotonic() - t0 < 2.5  # cut after the idle time, not when the client finally finished
    assert tree_files(client.cfg.upload_dir) == []
    deep = '{"a":' * 10000 + "1" + "}" * 10000  # an object, within max_body, nested past the decoder's depth
    resp = await client.post("/v1/jobs", data=deep, headers={**k, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"


async def test_the_sweep_keeps_what_a_live_job_reads_and_drops_orphans(client) -> None:
    k = bearer(client.keys["ingest_read"])
    body = os.urandom(4000)
    job = (await (await client.post("/v1/uploads?filename=a.wav", data=body, headers=k)).json())["job"]
    ready = client.cfg.upload_dir / "ready" / f"{job['asset_id']}.wav"
    receiver = client.app[STATE].uploads
    got = (await (await client.get(f"/v1/jobs/{job['id']}", headers=k)).json())["job"]
    if got["state"] not in ("published", "quarantined", "failed", "cancelled"):
        await asyncio.to_thread(receiver.sweep)
        assert ready.exists()  # its job has not ended: the master stays
    orphan = client.cfg.upload_dir / "ready" / ("f" * 64 + ".wav")
    orphan.write_bytes(b"left by a crash")
    await asyncio.to_thread(receiver.sweep)
    assert orphan.exists()  # young: maybe its job is being noted right now
    old = time.time() - client.cfg.api.tus_expiry - 10
    os.utime(orphan, (old, old))
    await asyncio.to_thread(receiver.sweep)
    assert not orphan.exists()
