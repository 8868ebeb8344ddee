"""Webhooks end to end: real jobs write the outbox, a real HTTP receiver (its own HMAC check) fails the first
attempts, the sender retries with backoff, is killed and restarted, and every event arrives signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fixtures_intake import SECRET, Receiver, Workers, intake_config, intake_toml, make_master, wait_until

from tonearm.app.jobs import open_queue
from tonearm.app.webhooks import Sender, sign, verify
from tonearm.app.webhooks_store import DeliveryStore

pytestmark = pytest.mark.slow


def published_and_quarantined(tmp_path: Path, cfg) -> list:
    """Two real jobs through the queue and a real worker (PostgreSQL): one published, one quarantined."""
    good = make_master(tmp_path / "good.wav", freq=330)
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"this is not audio\n" * 200)
    q = open_queue(cfg)
    toml = intake_toml(tmp_path / "worker.toml", cfg.data_dir, catalog_url=cfg.catalog.url)
    try:
        with Workers(toml, n=1):
            jobs = [q.submit(str(good), filename="good.wav", origin="cli"), q.submit(str(bad), filename="notes.wav")]
            done = q.wait([j.id for j in jobs], timeout=180)
        assert sorted(j.state.value for j in done) == ["published", "quarantined"], done
        events = q.events_since(0, 100)
    finally:
        q.close()
    assert {e.type for e in events} == {"published", "quarantined"}
    return events


def write_toml(path: Path, cfg, url: str, **hooks: object) -> Path:
    return intake_toml(path, cfg.data_dir, catalog_url=cfg.catalog.url,
                       webhooks={"urls": [url], "secret": SECRET, **hooks})


def test_signed_retried_and_resumed_after_kill(tmp_path: Path, pg_url: str) -> None:
    rx = Receiver(fail_first=3)
    cfg = intake_config(tmp_path / "data", catalog_url=pg_url, webhooks={"urls": [rx.url], "secret": SECRET})
    events = published_and_quarantined(tmp_path, cfg)
    toml = write_toml(tmp_path / "tonearm.toml", cfg, rx.url, backoff_s=0.3, max_backoff_s=0.6, poll_s=0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    argv = [sys.executable, "-m", "tonearm.app.cli", "--config", str(toml), "webhooks", "run"]
    try:
        first = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.PIPE)
        def failure_recorded(pending: bool = False) -> bool:
            store = DeliveryStore(cfg)
            try:
                return any(r["state"] == "pending" if pending else (r["last_error"] or "").startswith("HTTP 500")
                           for r in store.rows())
            finally:
                store.close()

        wait_until(failure_recorded, 30, "a failed attempt recorded")
        os.killpg(first.pid, signal.SIGKILL)  # no chance to save anything it had in memory
        first.wait(10)
        store = DeliveryStore(cfg)
        pending = store.rows()
        store.close()
        assert {r["state"] for r in pending} == {"pending"}, pending  # nothing delivered yet, nothing lost
        assert any(r["last_error"] and r["last_error"].startswith("HTTP 500") for r in pending)
        second = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: rx.delivered_ids() == {str(e.id) for e in events}, 30, "every event delivered")
            wait_until(lambda: not failure_recorded(pending=True), 10, "every delivery recorded")
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(10)
    finally:
        rx.close()
    assert all(h.signature_ok for h in rx.hits), "every attempt is signed with the secret"
    for h in rx.hits:  # the event id is in the header and the body, the same on every retry
        body = json.loads(h.body)
        assert h.headers["Tonearm-Event-Id"] == body["id"] and h.headers["Tonearm-Event"] == body["type"]
        assert body["type"] in ("published", "quarantined") and len(body["asset_id"] or "x" * 64) == 64
    published = next(json.loads(h.body) for h in rx.hits if json.loads(h.body)["type"] == "published")
    assert published["asset_id"] == next(e.asset_id for e in events if e.type == "published")
    # backoff: the attempts of one event are spaced by at least backoff_s (0.3 s, doubling), across the restart too
    for ev in events:
        times = [h.at for h in rx.hits if json.loads(h.body)["id"] == str(ev.id)]
        assert all(b - a >= 0.28 for a, b in zip(times, times[1:])), times
    assert len(rx.hits) >= len(events) + 3  # three 500s, then one success each at least
    store = DeliveryStore(cfg)
    rows = store.rows()
    store.close()
    assert {r["state"] for r in rows} == {"delivered"} and sum(r["attempts"] for r in rows) >= len(rows) + 1
    log = (first.stderr.read() + second.stderr.read()).decode()
    assert SECRET not in log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_given_up_after_the_retry_window_and_recorded(tmp_path: Path, backend: str,
                                                      request: pytest.FixtureRequest) -> None:
    """On both catalog backends: the delivery tables are created beside the catalog's, the same SQL runs."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    rx = Receiver(fail_first=10**6)
    cfg = intake_config(tmp_path / "data", catalog_url=url, webhooks={"urls": [rx.url], "secret": SECRET, "backoff_s": 0.1,
                                                       "max_backoff_s": 0.2, "retry_for_s": 1.0})
    q, store = open_queue(cfg), DeliveryStore(cfg)
    for i in range(3):  # real outbox rows, from the queue's own takedown transaction (no encode needed here)
        q.take_down(hashlib.sha256(f"gone {i}".encode()).hexdigest())
    events = q.events_since(0, 100)
    sender = Sender(cfg, q, store)
    try:
        wait_until(lambda: (sender.step(), store.counts().get("given_up") == len(events))[1], 20, "given up")
        hits = len(rx.hits)
        for _ in range(5):
            sender.step()
            time.sleep(0.1)
        assert len(rx.hits) == hits, "a given-up delivery is not tried again"
        rows = store.rows()
    finally:
        sender.close()
        store.close()
        q.close()
        rx.close()
    assert all(r["state"] == "given_up" and r["attempts"] >= 2 and r["last_error"].startswith("HTTP 500")
               for r in rows), rows
    times = sorted(r["settled_at"] - r["created_at"] for r in rows)
    assert times[0] >= 0.5  # kept trying for the retry window, not just once


def test_signature_rejects_a_wrong_secret_a_tampered_body_and_an_old_timestamp() -> None:
    body = b'{"id":"7","type":"published"}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    mac = hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()  # computed here
    assert header == f"t={now},v1={mac}" and verify(SECRET, header, body)
    assert not verify("x" * 40, header, body)
    assert not verify(SECRET, header, body.replace(b"7", b"8"))
    assert not verify(SECRET, sign(SECRET, body, now - 3600), body)
    assert not verify(SECRET, "v1=deadbeef", body)


def test_a_slow_or_huge_answer_is_bounded(tmp_path: Path) -> None:
    """A receiver that answers 200 with endless bytes, or never answers, costs at most the timeout."""
    import socket

    from tonearm.app.webhooks import post

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve() -> None:
        for mode in ("flood", "silent"):
            conn, _ = srv.accept()
            conn.recv(65536)
            if mode == "flood":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                try:
                    while True:
                        conn.sendall(b"x" * 65536)
                except OSError:
                    pass
            else:
                time.sleep(3)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    t0 = time.monotonic()
    status, text = post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=1.0)
    assert status == 200 and len(text) <= 200 and time.monotonic() - t0 < 3
    t0 = time.monotonic()
    with pytest.raises(OSError):
        post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=1.0)
    assert time.monotonic() - t0 < 2.5
    srv.close()


def test_two_senders_on_postgresql_deliver_each_event_once(tmp_path: Path, pg_url: str) -> None:
    """Two `tonearm webhooks run` processes on one PostgreSQL catalog: every claim is FOR UPDATE SKIP LOCKED,
    so with a receiver that always answers 200 each event arrives exactly once, from one or the other."""
    rx = Receiver(delay=0.05)
    data = tmp_path / "data"
    cfg = intake_config(data, catalog_url=pg_url, webhooks={"urls": [rx.url], "secret": SECRET})
    q = open_queue(cfg)
    try:
        for i in range(40):  # real outbox rows, written by the queue's own takedown transaction
            q.take_down(hashlib.sha256(f"asset {i}".encode()).hexdigest())
        events = q.events_since(0, 100)
    finally:
        q.close()
    assert len(events) == 40 and {e.type for e in events} == {"taken_down"}
    toml = write_toml(tmp_path / "tonearm.toml", cfg, rx.url, poll_s=0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    argv = [sys.executable, "-m", "tonearm.app.cli", "--config", str(toml), "webhooks", "run"]
    senders = [subprocess.Popen(argv, env=env, start_new_session=True) for _ in range(2)]
    try:
        wait_until(lambda: rx.delivered_ids() == {str(e.id) for e in events}, 60, "every event delivered")
        time.sleep(0.5)  # a duplicate would land now
    finally:
        for p in senders:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        rx.close()
    ids = [json.loads(h.body)["id"] for h in rx.hits]
    assert len(ids) == 40 and len(set(ids)) == 40, "each event once"
    assert all(h.signature_ok for h in rx.hits)


@pytest.mark.parametrize("grace_s", [5.0, 0.0])
def test_an_event_committed_out_of_id_order_is_not_lost(tmp_path: Path, pg_url: str, grace_s: float) -> None:
    """On PostgreSQL event 10 can commit after event 11; with the grace window the sender still delivers it.
    grace_s = 0 is the negative control: the cursor jumps past the late event, which is lost."""
    import psycopg

    rx = Receiver()
    cfg = intake_config(tmp_path / "data", catalog_url=pg_url, webhooks={"urls": [rx.url], "secret": SECRET})
    q, store = open_queue(cfg), DeliveryStore(cfg)
    sender = Sender(cfg, q, store, grace_s=grace_s)
    late, early = (hashlib.sha256(w.encode()).hexdigest() for w in ("late", "early"))
    slow = psycopg.connect(pg_url)  # takes its event id first, commits last (as _finish does, but slowly)
    try:
        slow.execute("INSERT INTO tonearm_events(type, asset_id, job_id, at, data) VALUES ('taken_down', %s, NULL,"
                     " %s, '{}')", (late, time.time()))
        q.take_down(early)
        ids = {e.asset_id: e.id for e in q.events_since(0, 10)}
        assert list(ids) == [early]  # the late one is not visible yet
        wait_until(lambda: (sender.step(), len(rx.hits) == 1)[1], 10, "the early event")
        slow.commit()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            sender.step()
            time.sleep(0.1)
        got = {json.loads(h.body)["asset_id"] for h in rx.hits}
    finally:
        slow.close()
        sender.close()
        store.close()
        q.close()
        rx.close()
    if grace_s:
        assert got == {early, late}, "the event that committed late was delivered"
    else:
        assert got == {early}, "negative control: without the grace window the late event is skipped"
