"""Takedown and repackage through the management API, end to end on PostgreSQL: a master uploaded to a
real ``tonearm api``, published by a real ``tonearm worker``, served by a real ``tonearm serve``.

Repackage: while the worker rebuilds the asset with a larger ladder, a client keeps fetching the old
manifests and segments through the origin: never a 404, every body the old version's or the new one's
bytes (never a torn or foreign one), and afterwards the descriptor lists the new ladder.
Takedown: the origin answers 404 for every file of the asset right after the DELETE; the same bytes
are then refused (409) unless forced.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import requests
from fixtures_api import bearer, make_keys, start_api
from fixtures_queue import Workers, make_master, queue_setup, wait_for
from fixtures_servers import start_origin

from origin.sources import REVALIDATE_S

pytestmark = pytest.mark.slow
NEW_LADDER = """
[ladder]
layouts = ["segmented"]
rungs = [{name = "aac_64k", codec = "aac", bitrate = 64000}, {name = "opus_96k", codec = "opus", bitrate = 96000},
         {name = "aac_128k", codec = "aac", bitrate = 128000}]
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def system(request, tmp_path_factory):
    """API and origin on one data dir; the jobs run by a ``tonearm worker`` (PostgreSQL) or by the API's own
    pool (SQLite).  ``restart()`` restarts whatever runs the jobs, so it reads a changed config."""
    tmp = tmp_path_factory.mktemp("assets")
    pg = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    url = pg.new_database() if pg else ""
    cfg, env = queue_setup(tmp, url)
    if not pg:
        env.pop("TONEARM_CATALOG_URL")
    keys = make_keys(cfg)
    (tmp / "logs").mkdir()
    workers = Workers(env, tmp / "logs")
    servers = {"api": start_api(cfg.storage.root, env=env)}

    def restart() -> None:
        if pg:
            workers.stop_all()
            workers.start("--concurrency", "1")
        else:
            port = int(servers["api"].base_url.rsplit(":", 1)[1])
            servers["api"].stop()
            servers["api"] = start_api(cfg.storage.root, env=env, port=port)

    try:
        if pg:
            workers.start("--concurrency", "1")
        api = servers["api"]
        master = make_master(tmp / "master.flac", seconds=4.0, freq=523.0)
        resp = requests.post(f"{api.base_url}/v1/uploads?filename=master.flac", data=master.read_bytes(),
                             headers=bearer(keys["ingest"]), timeout=30)
        assert resp.status_code == 202, resp.text
        job = resp.json()["job"]

        def published():
            got = requests.get(f"{api.base_url}/v1/jobs/{job['id']}", headers=bearer(keys["read"]), timeout=10)
            state = got.json()["job"]["state"]
            assert state not in ("failed", "quarantined", "cancelled"), got.text
            return state == "published"

        wait_for(published, 120, "the uploaded master to be published")
        servers["origin"] = start_origin(cfg.storage.root, env=env)
        yield {"api": api, "origin": servers["origin"], "keys": keys, "asset": job["asset_id"], "master": master,
               "cfg": cfg, "env": env, "restart": restart, "tmp": tmp}
    finally:
        workers.stop_all()
        for server in servers.values():
            server.stop()
        if pg:
            pg.drop_database(url)


def asset_urls(base: str, asset: str) -> dict[str, bytes]:
    """Every file a player of the segmented layout reads: both manifests, media playlists, inits, segments."""
    out: dict[str, bytes] = {}
    root = f"{base}/assets/{asset}"
    for name in ("master.m3u8", "manifest.mpd", "asset.json"):
        out[f"{root}/{name}"] = _get(f"{root}/{name}")
    for line in out[f"{root}/master.m3u8"].decode().splitlines():
        if line and not line.startswith("#"):
            playlist = f"{root}/{line}"
            out[playlist] = _get(playlist)
            rung = playlist.rsplit("/", 1)[0]
            for entry in out[playlist].decode().splitlines():
                if entry.startswith("#EXT-X-MAP:URI="):
                    init = entry.split('"')[1]
                    out[f"{rung}/{init}"] = _get(f"{rung}/{init}")
                elif entry and not entry.startswith("#"):
                    out[f"{rung}/{entry}"] = _get(f"{rung}/{entry}")
    return out


def _queue_events(cfg) -> list:
    """The queue's events, read in this process (SQLite: without running its pool here)."""
    if cfg.catalog.is_postgres:
        from tonearm.app.jobs import open_queue

        queue = open_queue(cfg)
    else:
        from tonearm.app.queue_local import LocalQueue

        queue = LocalQueue(cfg, run=False)
    try:
        return queue.events_since(0, limit=1000)
    finally:
        queue.close()


def _get(url: str) -> bytes:
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, (url, r.status_code)
    return r.content


# make test's budget: the SQLite variant (the API's own pool rebuilds) runs in make bench (-m long)
@pytest.mark.parametrize("system", [pytest.param("sqlite", marks=pytest.mark.long), "postgres"], indirect=True)
def test_repackage_swaps_versions_while_players_keep_playing_the_old_one(system) -> None:
    api, origin, keys, asset = system["api"], system["origin"], system["keys"], system["asset"]
    old = asset_urls(origin.base_url, asset)
    old_rungs = [r["name"] for r in requests.get(f"{origin.base_url}/assets/{asset}/asset.json").json()["renditions"]]
    assert sorted(old_rungs) == ["aac_64k", "opus_96k"]
    # the operator changes the ladder: workers started from now on encode three rungs
    (system["tmp"] / "tonearm.toml").write_text(NEW_LADDER)
    system["restart"]()

    failures: list[tuple[str, object]] = []
    bodies: dict[str, set[bytes]] = {u: set() for u in old}
    fetches = [0]
    stop = threading.Event()

    def player() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                for url in old:
                    r = s.get(url, timeout=10)
                    fetches[0] += 1
                    if r.status_code != 200:
                        failures.append((url, r.status_code))
                    else:
                        bodies[url].add(r.content)

    thread = threading.Thread(target=player)
    thread.start()
    try:
        resp = requests.post(f"{api.base_url}/v1/assets/{asset}/repackage", headers=bearer(keys["admin"]), timeout=30)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job"]["id"]

        def done():
            j = requests.get(f"{api.base_url}/v1/jobs/{job_id}", headers=bearer(keys["read"]), timeout=10).json()
            assert j["job"]["state"] not in ("failed", "quarantined", "cancelled"), j
            return j["job"]["state"] == "published"

        wait_for(done, 120, "the repackage job")
        time.sleep(1.5)  # the origin revalidates an asset at most 1 s after a change: let the player see the new one
    finally:
        stop.set()
        thread.join()
    new = asset_urls(origin.base_url, asset)
    assert failures == [], failures[:5]
    for url, seen in bodies.items():  # each body the old version's bytes or the new version's, nothing else
        assert seen <= {old[url], new.get(url)}, url
    descriptor = requests.get(f"{api.base_url}/v1/assets/{asset}", headers=bearer(keys["read"]), timeout=10).json()
    new_rungs = [r["name"] for r in descriptor["asset"]["descriptor"]["renditions"]]
    assert sorted(new_rungs) == ["aac_128k", "aac_64k", "opus_96k"]
    assert any("aac_128k" in u for u in new)  # the origin serves the new rung
    changed = [u for u in old if old[u] != new[u]]
    assert any(u.endswith("master.m3u8") for u in changed)  # a new version really replaced the old one
    print(f"repackage: {fetches[0]} fetches of the old version's {len(old)} files, 0 failures; {len(changed)} "
          "files changed")


def test_takedown_stops_the_origin_at_once_and_a_tombstone_refuses_the_bytes(system) -> None:
    api, origin, keys, asset = system["api"], system["origin"], system["keys"], system["asset"]
    urls = list(asset_urls(origin.base_url, asset))
    assert (requests.delete(f"{api.base_url}/v1/assets/{asset}", headers=bearer(keys["ingest_read"]), timeout=10)
            .status_code) == 403
    t0 = time.monotonic()
    resp = requests.delete(f"{api.base_url}/v1/assets/{asset}", headers=bearer(keys["admin"]), timeout=30)
    assert resp.status_code == 200 and resp.json() == {
        "asset": {"id": asset, "state": "taken_down", "was_published": True}, "cancelled_jobs": []}
    # Files the origin never cached are 404 at once; cached ones once their asset is rechecked, which the
    # origin does at most REVALIDATE_S (1 s) after it last did.  Poll every file until all are 404.
    last_200: dict[str, float] = {}
    with requests.Session() as s:
        while time.monotonic() - t0 < REVALIDATE_S + 2:
            statuses = {u: s.get(u, timeout=10).status_code for u in urls}
            now = time.monotonic() - t0
            last_200.update({u: now for u, st in statuses.items() if st == 200})
            if set(statuses.values()) == {404}:
                break
            time.sleep(0.05)
    elapsed = time.monotonic() - t0
    assert set(statuses.values()) == {404}, statuses
    worst = max(last_200.values(), default=0.0)
    assert worst <= REVALIDATE_S + 0.5, last_200  # served at most until the origin's next check of the asset
    print(f"takedown: all {len(urls)} files 404 {elapsed:.2f} s after the DELETE was sent; the last 200 at "
          f"{worst:.2f} s ({len(last_200)} files were still served from the origin's cache before its recheck)")
    assert not (system["cfg"].storage.root / "published" / asset).exists()
    got = requests.get(f"{api.base_url}/v1/assets/{asset}", headers=bearer(keys["read"]), timeout=10).json()
    assert got["asset"]["state"] == "taken_down" and got["asset"]["descriptor"] is None
    events = [e for e in _queue_events(system["cfg"]) if e.asset_id == asset]
    assert [e.type for e in events][-1] == "taken_down"  # the webhook outbox has it
    body = system["master"].read_bytes()
    assert hashlib.sha256(body).hexdigest() == asset
    again = requests.post(f"{api.base_url}/v1/uploads?filename=again.flac", data=body,
                          headers=bearer(keys["ingest"]), timeout=30)
    assert again.status_code == 409 and again.json()["error"]["code"] == "asset_taken_down", again.text
    assert requests.delete(f"{api.base_url}/v1/assets/{asset}", headers=bearer(keys["admin"]),
                           timeout=10).json()["asset"]["was_published"] is False  # a repeat is harmless
    forced = requests.post(f"{api.base_url}/v1/uploads?filename=again.flac&force=true", data=body,
                           headers=bearer(keys["ingest"]), timeout=30)
    assert forced.status_code == 202, forced.text
    assert forced.json()["job"]["asset_id"] == asset
    # cancelled again, so the worker stops at once at teardown (and cancellation reaches a running job)
    job_id = forced.json()["job"]["id"]
    requests.delete(f"{api.base_url}/v1/jobs/{job_id}", headers=bearer(keys["admin"]), timeout=10)
    wait_for(lambda: requests.get(f"{api.base_url}/v1/jobs/{job_id}", headers=bearer(keys["read"]), timeout=10)
             .json()["job"]["state"] == "cancelled", 30, "the forced job to be cancelled")
