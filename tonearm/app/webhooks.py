"""Webhooks: a signed POST for every published, quarantined, failed and taken-down event.

Source of truth: the queue's outbox (``JobQueue.events_since``), written in the same transaction as
the state change, so an event exists if and only if the change happened.  ``tonearm webhooks run``
is the one kind of process that sends (``make service`` starts one; any number may run, see
:mod:`tonearm.app.webhooks_store` for why each delivery is sent by one of them at a time): it copies
new events into per-URL delivery rows, then POSTs the due ones.

The request::

    POST <url>
    Content-Type: application/json
    Tonearm-Event-Id: <event id>          (the same on every retry: receivers dedupe on it)
    Tonearm-Event: published
    Tonearm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

    {"id": "<event id>", "type": "published", "asset_id": ..., "job_id": ..., "at": ..., "data": {...}}

A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in constant time
and rejects old timestamps (replays); :func:`verify` does exactly that.  Delivery is at least once: a
2xx answer settles it; anything else (a refused connection, a timeout, 3xx, 4xx, 5xx) is retried after
``backoff_s``, doubling up to ``max_backoff_s``, until ``retry_for_s`` (a day) has passed since the
event, when it is given up and recorded with its last error.  Redirects are not followed (a redirect
could point the signed payload anywhere).  Each attempt is bounded: ``timeout_s`` for the connection
and the whole response, at most 64 KiB of response body read.  The secret is never logged; errors
name the URL (which cannot hold credentials, the config refuses them) and the status.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import urlsplit

from ingest.names import printable
from tonearm.app.jobs import Event, JobQueue, open_queue
from tonearm.app.webhooks_store import Delivery, DeliveryStore
from tonearm.core.config import Config

log = logging.getLogger("tonearm.webhooks")

__all__ = ("sign", "verify", "Sender", "run_webhooks", "MAX_RESPONSE_BYTES")

MAX_RESPONSE_BYTES = 64 << 10
SENDERS = 4  # POSTs in flight per sender process
OUTBOX_GRACE_S = 60.0  # events younger than this are read again: an earlier id may still commit (see fan_out)
SIGNATURE_HEADER = "Tonearm-Signature"


def sign(secret: str, body: bytes, ts: int) -> str:
    mac = hmac.new(secret.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None) -> bool:
    """A receiver's check: the signature matches and its timestamp is within ``tolerance_s``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def event_body(ev: Event) -> str:
    return json.dumps({"id": str(ev.id), "type": ev.type, "asset_id": ev.asset_id, "job_id": ev.job_id, "at": ev.at,
                       "data": ev.data}, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """One bounded POST: (status, up to 200 characters of the answer, for the record)."""
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    deadline = time.monotonic() + timeout
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        resp = conn.getresponse()
        got = b""
        while len(got) < MAX_RESPONSE_BYTES and time.monotonic() < deadline:
            chunk = resp.read1(MAX_RESPONSE_BYTES - len(got)) if hasattr(resp, "read1") else resp.read(4096)
            if not chunk:
                break
            got += chunk
        return resp.status, printable(got[:200].decode("utf-8", "replace"))  # one line in logs and the record
    finally:
        conn.close()


class Sender:
    """Fans events out into deliveries and sends the due ones; ``step()`` is one pass."""

    def __init__(self, cfg: Config, queue: JobQueue, store: DeliveryStore, *, grace_s: float = OUTBOX_GRACE_S) -> None:
        self.cfg, self.hooks, self.queue, self.store = cfg, cfg.webhooks, queue, store
        self.grace_s = grace_s
        self._copied: dict[int, float] = {}  # event id -> its time, for the events re-read inside the grace
        self.pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="webhook")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def fan_out(self) -> int:
        """Copy new outbox events into delivery rows; returns how many rows were new here.

        Event ids come from a sequence, and on PostgreSQL two transactions may commit out of id order: event
        10 can become visible after 11.  A cursor moved past 11 at once would skip 10 for ever, so the
        persisted cursor only passes events older than ``grace_s`` (a state change's transaction is short),
        and the events after it are read again on every pass; the rows are idempotent (``ON CONFLICT DO
        NOTHING``) and this process skips the ids it already copied."""
        cursor = after = self.store.cursor()
        horizon = time.time() - self.grace_s
        settled = True  # every event read so far is older than the horizon
        n = 0
        while True:
            events = self.queue.events_since(after, 100)
            if not events:
                break
            rows = []
            for ev in events:
                settled = settled and ev.at < horizon
                if settled:
                    cursor = ev.id
                if ev.id in self._copied or ev.type not in self.hooks.events:
                    continue
                body = event_body(ev)
                for url in self.hooks.urls:
                    rows.append((f"{ev.id}:{hashlib.sha256(url.encode()).hexdigest()[:16]}", ev.id, url, body))
            self.store.fan_out(rows, cursor)
            self._copied.update((ev.id, ev.at) for ev in events)
            n += len(rows)
            after = events[-1].id
            if len(events) < 100:
                break
        self._copied = {i: at for i, at in self._copied.items() if at >= horizon - 60}
        return n

    def send_due(self) -> int:
        # one round of the pool: each claimed row is attempted within timeout_s, well inside its lease
        due = self.store.claim(SENDERS, lease_s=self.hooks.timeout_s + 5)
        for d, error in zip(due, self.pool.map(self._attempt, due)):  # POSTs in threads, the records here
            self._record(d, error)
        return len(due)

    def step(self) -> int:
        self.fan_out()
        return self.send_due()

    def _attempt(self, d: Delivery) -> str | None:
        """One POST; None on a 2xx answer, else why not."""
        body = d.body.encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "tonearm-webhooks/1",
                   "Tonearm-Event-Id": str(d.event_id), "Tonearm-Event": json.loads(d.body)["type"],
                   SIGNATURE_HEADER: sign(self.hooks.secret, body, ts)}
        try:
            status, text = post(d.url, body, headers, self.hooks.timeout_s)
            error = None if 200 <= status < 300 else f"HTTP {status}: {text}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return error

    def _record(self, d: Delivery, error: str | None) -> None:
        if error is None:
            self.store.delivered(d)
            return
        delay = min(self.hooks.backoff_s * 2 ** d.attempts, self.hooks.max_backoff_s)
        retry_at = time.time() + delay
        if retry_at - d.created_at > self.hooks.retry_for_s:
            log.warning("webhook: gave up event %s to %s after %d attempts: %s", d.event_id, d.url, d.attempts + 1,
                        error)
            self.store.failed(d, error, retry_at=None)
        else:
            log.info("webhook: event %s to %s failed (%s); retry in %.0f s", d.event_id, d.url, error, delay)
            self.store.failed(d, error, retry_at=retry_at)


def events_reader(cfg: Config) -> JobQueue:
    """The queue, to read its outbox only: with SQLite a ``LocalQueue`` that runs no jobs (the watcher's or the
    API's process runs them); with PostgreSQL the shared queue."""
    if cfg.catalog.is_postgres:
        return open_queue(cfg)
    from tonearm.app.queue_local import LocalQueue

    return LocalQueue(cfg, run=False)


def run_webhooks(cfg: Config, *, stop: threading.Event | None = None, once: bool = False,
                 queue: JobQueue | None = None) -> int:
    """Send until ``stop`` (``once``: until nothing is due now).  Returns 0."""
    stop = stop or threading.Event()
    own = queue is None
    queue = queue or events_reader(cfg)
    store = DeliveryStore(cfg)
    sender = Sender(cfg, queue, store)
    try:
        while not stop.is_set():
            sent = sender.step()
            if once and not sent:
                break
            if not sent:
                stop.wait(cfg.webhooks.poll_s)
        return 0
    finally:
        sender.close()
        store.close()
        if own:
            queue.close()


def add_command(sub: "argparse._SubParsersAction", config: Callable[..., Config]) -> None:
    """``tonearm webhooks run|status``, registered by the CLI (one line there)."""
    s = sub.add_parser("webhooks", help="send the signed event webhooks ([webhooks] urls), or show their state")
    cmds = s.add_subparsers(dest="webhooks_command", required=True)
    r = cmds.add_parser("run", help="deliver events until stopped (any number may run: each delivery is claimed)")
    r.add_argument("--once", action="store_true", help="stop when nothing is due")
    r.set_defaults(func=lambda args: _run(config(args), args.once))
    cmds.add_parser("status", help="deliveries by state, as JSON").set_defaults(func=lambda args: _status(config(args)))


def _run(cfg: Config, once: bool) -> int:
    if not cfg.webhooks.urls:
        log.warning("webhooks: no [webhooks] urls configured; events are read and nothing is sent")
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the POSTs in flight and record them
    return run_webhooks(cfg, once=once, stop=stop)


def _status(cfg: Config) -> int:
    store = DeliveryStore(cfg)
    try:
        print(json.dumps({"counts": store.counts(), "deliveries": store.rows()[-100:]}, indent=1))
    finally:
        store.close()
    return 0
