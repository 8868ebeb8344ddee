"""The catalog on PostgreSQL: the same rows, leases and answers as the SQLite one (``catalog.py``).

Chosen by ``[catalog] url = "postgresql://..."`` (:func:`tonearm.core.catalog_open.open_catalog`), so
workers on many machines share one catalog.  ``claim`` is atomic through ``INSERT ... ON CONFLICT DO
NOTHING`` then ``SELECT ... FOR UPDATE`` on the row; the lease (owner, expiry) and the ``fence``
counter (incremented by every successful claim: the attempt number, a fencing token a stale holder
cannot match) are the backstop behind the job queue's own exactly-once machinery.

The server may restart under us (failover, maintenance): every operation runs in one transaction
on a per-thread connection and, when the connection is lost, is run again on a new one for up to
``reconnect_s`` seconds.  Each operation is idempotent when repeated (a re-claim by the same owner
is re-entrant, a state written twice is the same state), so a commit whose answer was lost is safe
to repeat.  A server that stays away, or refuses us, is a ``CatalogError`` that names the server
without its password.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tonearm.core.catalog import (
    FINAL_STATES,
    RECORD,
    AssetRecord,
    Claim,
    _record,
    default_owner,
    like_pattern,
    owner_alive,
    search_keys,
    state_update,
)
from tonearm.core.catalog_errors import CatalogError
from tonearm.core.model import AssetState

__all__ = ("PgCatalog", "redact", "SCHEMA")

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source_name TEXT NOT NULL,
    info TEXT,
    error TEXT,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    search_title TEXT,
    search_artist TEXT,
    fence BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS assets_created ON assets(created_at);
CREATE INDEX IF NOT EXISTS assets_listing ON assets(state, created_at, id, search_title, search_artist);
"""
SCHEMA_LOCK = 0x746F6E65  # pg_advisory_xact_lock key: two processes creating the schema at once take turns

T = TypeVar("T")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[1]}"))
    except ValueError:
        return "postgresql://(unparseable)"


class PgCatalog:
    def __init__(self, url: str, *, reconnect_s: float = 60.0) -> None:
        self.url = url
        self.path = redact(url)  # what CatalogError and the CLI name
        self.reconnect_s = reconnect_s
        self._local = threading.local()
        self.run(lambda db: _create(db))

    # -- connections ------------------------------------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn(db)`` in one transaction, again on a new connection while the server is unreachable."""
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.05
        while True:
            try:
                conn = self._conn()
                with conn.transaction():
                    return fn(conn)
            except psycopg.OperationalError as exc:
                self._drop()
                if time.monotonic() + delay > deadline:
                    raise CatalogError(self.path, f"cannot reach the server: {_first_line(exc)}",
                                       "check that PostgreSQL is running and [catalog] url is right") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise CatalogError(self.path, _first_line(exc), "grant the catalog's user its tables") from exc

    def close(self) -> None:
        self._drop()

    # -- the catalog protocol (see tonearm.core.catalog.Catalog) -----------------------------------------------------

    def claim(self, asset_id: str, source_name: str, *, owner: str | None = None, lease_s: float = 600) -> Claim:
        owner = owner or default_owner()

        def tx(db: psycopg.Connection) -> Claim:
            now = time.time()
            inserted = db.execute(
                "INSERT INTO assets(id, state, source_name, owner, lease_until, created_at, updated_at, fence)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,1) ON CONFLICT (id) DO NOTHING RETURNING id",
                (asset_id, AssetState.RECEIVED.value, source_name, owner, now + lease_s, now, now)).fetchone()
            if inserted:
                return Claim.CLAIMED
            state, holder, until = db.execute(
                "SELECT state, owner, lease_until FROM assets WHERE id=%s FOR UPDATE", (asset_id,)).fetchone()
            if AssetState(state) in FINAL_STATES:
                return Claim.DONE
            if holder and holder != owner and until and until > now and owner_alive(holder):
                return Claim.BUSY
            db.execute("UPDATE assets SET owner=%s, lease_until=%s, updated_at=%s,"
                       " fence = fence + CASE WHEN owner IS DISTINCT FROM %s THEN 1 ELSE 0 END WHERE id=%s",
                       (owner, now + lease_s, now, owner, asset_id))
            return Claim.CLAIMED

        return self.run(tx)

    def renew(self, asset_id: str, *, owner: str | None = None, lease_s: float = 600) -> bool:
        """Extend the lease; False if ``owner`` no longer holds it (then it must not publish)."""
        return self.run(lambda db: db.execute(
            "UPDATE assets SET lease_until=%s WHERE id=%s AND owner=%s",
            (time.time() + lease_s, asset_id, owner or default_owner())).rowcount == 1)

    def fence(self, asset_id: str) -> int:
        """The lease's fencing token: how many owners have claimed the asset so far (0: no row)."""
        row = self.run(lambda db: db.execute("SELECT fence FROM assets WHERE id=%s", (asset_id,)).fetchone())
        return int(row[0]) if row else 0

    def set_state(self, asset_id: str, state: AssetState, *, info: dict[str, Any] | None = None,
                  error: dict[str, Any] | None = None, release: bool = False) -> None:
        sql, args = state_update(state, info=info, error=error, release=release, mark="%s")
        self.run(lambda db: db.execute(sql, (*args, asset_id)))

    def get(self, asset_id: str) -> AssetRecord | None:
        row = self.run(lambda db: db.execute(f"SELECT {RECORD} FROM assets WHERE id=%s", (asset_id,)).fetchone())
        return _record(row) if row else None

    def list(self, *, limit: int = 50, offset: int = 0, state: AssetState | None = None,
             q: str | None = None) -> list[AssetRecord]:
        """A page in publishing order (created_at, id); ``q``: only rows whose title or artist contains it."""
        where, args = _filter(state, q)
        query = f"SELECT {RECORD} FROM assets{where} ORDER BY created_at, id LIMIT %s OFFSET %s"
        rows = self.run(lambda db: db.execute(query, (*args, limit, offset)).fetchall())
        return [_record(r) for r in rows]

    def count(self, *, state: AssetState | None = None, q: str | None = None) -> int:
        where, args = _filter(state, q)
        return self.run(lambda db: db.execute(f"SELECT COUNT(*) FROM assets{where}", args).fetchone()[0])

    def verify(self) -> None:
        """Read every row; raise ``CatalogError`` if one is damaged (the server checks its own pages)."""
        rows = self.run(lambda db: db.execute(f"SELECT {RECORD} FROM assets").fetchall())
        for row in rows:
            try:
                _record(row)
            except (ValueError, TypeError) as exc:
                raise CatalogError(self.path, f"row {row[0]!r} is damaged: {exc}") from exc

    def restore_published(self, descriptors: list[dict[str, Any]]) -> None:
        """Make each descriptor's asset a published row (info = the descriptor), in one transaction."""

        def tx(db: psycopg.Connection) -> None:
            now = time.time()
            for d in descriptors:
                at = d.get("published_at")
                created = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else now
                db.execute(
                    "INSERT INTO assets(id, state, source_name, info, error, owner, lease_until, created_at,"
                    " updated_at, search_title, search_artist) VALUES (%s,%s,%s,%s,NULL,NULL,NULL,%s,%s,%s,%s)"
                    " ON CONFLICT(id) DO UPDATE SET state=excluded.state, source_name=excluded.source_name,"
                    " info=excluded.info, error=NULL, owner=NULL, lease_until=NULL, updated_at=excluded.updated_at,"
                    " search_title=excluded.search_title, search_artist=excluded.search_artist",
                    (d["asset_id"], AssetState.PUBLISHED.value, d["source_name"], json.dumps(d, sort_keys=True),
                     created, now, *search_keys(d)))

        self.run(tx)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction of the caller's (the job queue writes its rows in the same one); not retried."""
        conn = self._conn()
        try:
            with conn.transaction():
                yield conn
        except psycopg.OperationalError:
            self._drop()
            raise


def _create(db: psycopg.Connection) -> None:
    db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    tables = {r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'assets'")}
    if tables and not {"id", "state", "owner", "lease_until", "info"} <= tables:
        raise CatalogError("postgresql", "unexpected schema: table assets lacks tonearm's columns",
                           "point [catalog] url at a database of tonearm's own")
    db.execute(SCHEMA)


def _filter(state: AssetState | None, q: str | None) -> tuple[str, list[Any]]:
    terms: list[str] = []
    args: list[Any] = []
    if state is not None:
        terms.append("state=%s")
        args.append(state.value)
    if q:
        terms.append("(search_title LIKE %s ESCAPE '\\' OR search_artist LIKE %s ESCAPE '\\')")
        args += [like_pattern(q)] * 2
    return (" WHERE " + " AND ".join(terms) if terms else ""), args


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
