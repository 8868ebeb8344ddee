"""Webhook delivery state: two small tables in the catalog's database (SQLite or PostgreSQL).

``webhook_cursor`` remembers the last outbox event (``JobQueue.events_since``) fanned out into
``webhook_deliveries``, one row per (event, URL).  A row is ``pending`` until a 2xx answer
(``delivered``) or until ``[webhooks] retry_for_s`` has passed since the event (``given_up``, with
the last error kept).  Every step is a short transaction, so a sender killed at any point resumes
from the rows: at least once, never lost.

Many senders may run at once (every ``tonearm webhooks run``, on any machine sharing the catalog):
a sender *claims* due rows by setting ``locked_until`` in one statement (PostgreSQL: ``FOR UPDATE
SKIP LOCKED``, so two senders never take the same row; SQLite: its single writer serialises the
claim), and a claim that is not settled in time (the sender died) expires and the row is retried.
Fan-out inserts are idempotent (``ON CONFLICT DO NOTHING``), so two senders copying the same
events is harmless.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from tonearm.core.config import Config

__all__ = ("DeliveryStore", "Delivery")

_TABLES = (
    "CREATE TABLE IF NOT EXISTS webhook_cursor (name TEXT PRIMARY KEY, last_event BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (id TEXT PRIMARY KEY, event_id BIGINT NOT NULL, url TEXT NOT NULL,"
    " body TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, next_at DOUBLE PRECISION NOT NULL,"
    " locked_until DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL, settled_at DOUBLE PRECISION,"
    " last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries (state, next_at)",
)


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: int
    url: str
    body: str
    attempts: int
    created_at: float


class DeliveryStore:
    """One connection; every method is one transaction."""

    def __init__(self, cfg: Config) -> None:
        self.pg = cfg.catalog.is_postgres
        if self.pg:
            import psycopg

            self.db: Any = psycopg.connect(cfg.catalog.url, autocommit=True, connect_timeout=10)
        else:
            cfg.catalog_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(cfg.catalog_path, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA busy_timeout=30000")
        for attempt in range(5):  # two processes creating the tables at once: PostgreSQL lets one win
            try:
                for sql in _TABLES:
                    self._exec(sql)
                break
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.db.close()

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.pg:
            sql = sql.replace("?", "%s")
        cur = self.db.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        return [tuple(r) for r in rows]

    def _tx(self, statements: list[tuple[str, tuple]]) -> list[list[tuple]]:
        begin = "BEGIN" if self.pg else "BEGIN IMMEDIATE"
        self._exec(begin)
        try:
            out = [self._exec(sql, p) for sql, p in statements]
        except BaseException:
            self._exec("ROLLBACK")
            raise
        self._exec("COMMIT")
        return out

    def cursor(self, name: str = "default") -> int:
        rows = self._exec("SELECT last_event FROM webhook_cursor WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def fan_out(self, rows: list[tuple[str, int, str, str]], last_event: int, name: str = "default") -> None:
        """Insert deliveries (id, event id, url, body) and move the cursor, in one transaction."""
        now = time.time()
        stmts = [("INSERT INTO webhook_deliveries (id, event_id, url, body, state, attempts, next_at, locked_until,"
                  " created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, 0, ?) ON CONFLICT (id) DO NOTHING",
                  (rid, eid, url, body, now, now)) for rid, eid, url, body in rows]
        stmts.append(("INSERT INTO webhook_cursor (name, last_event) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                      "last_event = CASE WHEN webhook_cursor.last_event > excluded.last_event THEN "
                      "webhook_cursor.last_event ELSE excluded.last_event END", (name, last_event)))
        self._tx(stmts)

    def claim(self, limit: int, lease_s: float) -> list[Delivery]:
        """Due pending rows, locked for ``lease_s`` to this sender."""
        now = time.time()
        skip = " FOR UPDATE SKIP LOCKED" if self.pg else ""
        rows = self._tx([(
            "UPDATE webhook_deliveries SET locked_until = ? WHERE id IN (SELECT id FROM webhook_deliveries WHERE "
            f"state = 'pending' AND next_at <= ? AND locked_until <= ? ORDER BY next_at LIMIT ?{skip}) "
            "RETURNING id, event_id, url, body, attempts, created_at", (now + lease_s, now, now, limit))])[0]
        return [Delivery(r[0], int(r[1]), r[2], r[3], int(r[4]), float(r[5])) for r in rows]

    def delivered(self, d: Delivery) -> None:
        self._exec("UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, settled_at = ?, "
                   "last_error = NULL, locked_until = 0 WHERE id = ?", (time.time(), d.id))

    def failed(self, d: Delivery, error: str, *, retry_at: float | None) -> None:
        """One more failed attempt: retry at ``retry_at``, or give up (``None``)."""
        now = time.time()
        if retry_at is None:
            self._exec("UPDATE webhook_deliveries SET state = 'given_up', attempts = attempts + 1, settled_at = ?, "
                       "last_error = ?, locked_until = 0 WHERE id = ?", (now, error[:500], d.id))
        else:
            self._exec("UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, last_error = ?, "
                       "locked_until = 0 WHERE id = ?", (retry_at, error[:500], d.id))

    def counts(self) -> dict[str, int]:
        return {state: int(n) for state, n in
                self._exec("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state")}

    def rows(self) -> list[dict[str, Any]]:
        cols = ("id", "event_id", "url", "state", "attempts", "next_at", "created_at", "settled_at", "last_error")
        return [dict(zip(cols, r)) for r in self._exec(f"SELECT {', '.join(cols)} FROM webhook_deliveries "
                                                       "ORDER BY event_id, url")]
