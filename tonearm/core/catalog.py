"""The catalog: one row per content-addressed asset, with its state.

SQLite with WAL and ``BEGIN IMMEDIATE`` makes ``claim`` atomic across
processes: of two ingests of the same bytes, one takes the lease and does
the work, the other sees it busy or done.  A lease that expires (the worker
crashed) can be taken over, and the job resumes from a clean staging dir.

A catalog that cannot be used (not a database, truncated, another schema, a
directory in its place) or cannot be written (a full disk) raises
``CatalogError``, whose message names the file and what to do.  The catalog is
derived data: ``tonearm.core.catalog_rebuild`` recreates it from the published descriptors.

Search: ``list(q=...)`` and ``count(q=...)`` match a case-insensitive substring of the title or the
artist (never the master's file name).  Each row keeps its tags' title and artist folded (NFKC,
casefold) in ``search_title`` / ``search_artist``, written with ``info`` by ``set_state`` and
``restore_published``; a catalog made before those columns gets them, filled from ``info``, the first
time it is opened.  The index ``assets_listing (state, created_at, id, search_title, search_artist)``
holds every column a page or a search filters and sorts on, so a page of published assets, its
count and a search scan that narrow index (a substring has no B-tree order to seek: ``LIKE '%x%'``
reads every entry of the state, a few bytes each) and read the rows (with their ``info`` JSON) of
the page only.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import socket
import sqlite3
import threading
import time
import unicodedata
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tonearm.core.catalog_errors import CatalogError, translate_error
from tonearm.core.errors import TonearmError
from tonearm.core.model import AssetState

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source_name TEXT NOT NULL,
    info TEXT,
    error TEXT,
    owner TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    search_title TEXT,
    search_artist TEXT
);
CREATE INDEX IF NOT EXISTS assets_created ON assets(created_at);
"""
# Created after SEARCH_COLUMNS exist (an older catalog gets them in _migrate first).
INDEXES = """
CREATE INDEX IF NOT EXISTS assets_listing ON assets(state, created_at, id, search_title, search_artist);
"""
SEARCH_COLUMNS = ("search_title", "search_artist")  # added to older catalogs; not required by _check_schema

FINAL_STATES = {AssetState.PUBLISHED, AssetState.QUARANTINED}
COLUMNS = ("id", "state", "source_name", "info", "error", "owner", "lease_until", "created_at", "updated_at")


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(fn: _F) -> _F:
    """Turn SQLite and OS errors on the catalog into ``CatalogError`` where one explains them."""

    @functools.wraps(fn)
    def wrapper(self: "Catalog", *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            err = translate_error(self.path, exc)
            if err is None:
                raise
            raise err from exc

    return wrapper  # type: ignore[return-value]


def _check_schema(path: Path, db: sqlite3.Connection) -> None:
    """An empty database is fine (it gets our schema); one with other tables, or an ``assets``
    table without our columns, is someone else's file: refuse it before writing anything."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "assets" in tables:
        have = {row[1] for row in db.execute("PRAGMA table_info(assets)")}
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            raise CatalogError(path, f"unexpected schema: table assets has no column {', '.join(missing)}")
    elif tables:
        raise CatalogError(path, f"unexpected schema: no assets table, but {', '.join(sorted(tables))}")


class Claim(enum.Enum):
    CLAIMED = "claimed"  # the caller owns the job now
    DONE = "done"  # already published or quarantined: nothing to do
    BUSY = "busy"  # another live worker holds the lease


@dataclass(frozen=True, kw_only=True)
class AssetRecord:
    id: str
    state: AssetState
    source_name: str
    info: dict[str, Any]
    error: dict[str, Any] | None
    created_at: float
    updated_at: float


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Catalog:
    @_guarded
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create()

    def _create(self, patience: float = 30.0) -> None:
        """Switch to WAL and create the schema, waiting out other processes doing the same.

        Changing the journal mode ignores SQLite's busy timeout: two processes opening a new
        catalog at once get "database is locked" at once, so we retry here.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                with closing(self._connect()) as db:
                    _check_schema(self.path, db)  # before anything is written to a file that is not ours
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                    _migrate(db)
                    db.executescript(INDEXES)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed BEGIN or COMMIT (disk full) has none left to roll back
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one to report
            raise
        finally:
            db.close()

    @_guarded
    def claim(self, asset_id: str, source_name: str, *, owner: str | None = None, lease_s: float = 600) -> Claim:
        owner = owner or default_owner()
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state, owner, lease_until FROM assets WHERE id=?", (asset_id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO assets(id, state, source_name, owner, lease_until, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (asset_id, AssetState.RECEIVED.value, source_name, owner, now + lease_s, now, now),
                )
                return Claim.CLAIMED
            state, holder, until = row
            if AssetState(state) in FINAL_STATES:
                return Claim.DONE
            if holder and holder != owner and until and until > now and owner_alive(holder):
                return Claim.BUSY
            db.execute(
                "UPDATE assets SET owner=?, lease_until=?, updated_at=? WHERE id=?",
                (owner, now + lease_s, now, asset_id),
            )
            return Claim.CLAIMED

    @_guarded
    def renew(self, asset_id: str, *, owner: str | None = None, lease_s: float = 600) -> bool:
        """Extend the lease; False if ``owner`` no longer holds it (then it must not publish)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE assets SET lease_until=? WHERE id=? AND owner=?",
                (time.time() + lease_s, asset_id, owner or default_owner()),
            )
            return cur.rowcount == 1

    @_guarded
    def set_state(
        self,
        asset_id: str,
        state: AssetState,
        *,
        info: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        release: bool = False,
    ) -> None:
        sql, args = state_update(state, info=info, error=error, release=release, mark="?")
        with self._tx() as db:
            db.execute(sql, (*args, asset_id))

    @_guarded
    def get(self, asset_id: str) -> AssetRecord | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, state, source_name, info, error, created_at, updated_at FROM assets WHERE id=?",
                (asset_id,),
            ).fetchone()
        return _record(row) if row else None

    @_guarded
    def list(self, *, limit: int = 50, offset: int = 0, state: AssetState | None = None,
             q: str | None = None) -> list[AssetRecord]:
        """A page in publishing order (created_at, id); ``q``: only rows whose title or artist contains it."""
        where, args = _filter(state, q)
        # The page's ids come from the index alone; only those rows (and their info) are read.
        query = (f"SELECT {RECORD} FROM assets WHERE rowid IN (SELECT rowid FROM assets{where}"
                 " ORDER BY created_at, id LIMIT ? OFFSET ?) ORDER BY created_at, id")
        with closing(self._connect()) as db:
            rows = db.execute(query, (*args, limit, offset)).fetchall()
        return [_record(r) for r in rows]

    @_guarded
    def count(self, *, state: AssetState | None = None, q: str | None = None) -> int:
        where, args = _filter(state, q)
        with closing(self._connect()) as db:
            return db.execute(f"SELECT COUNT(*) FROM assets{where}", args).fetchone()[0]

    @_guarded
    def verify(self) -> None:
        """Read every page and every row; raise ``CatalogError`` if any is damaged."""
        with closing(self._connect()) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise CatalogError(self.path, f"damaged: {problems[0]}")
            for row in db.execute("SELECT id, state, source_name, info, error, created_at, updated_at FROM assets"):
                try:
                    _record(row)
                except (ValueError, TypeError) as exc:
                    raise CatalogError(self.path, f"row {row[0]!r} is damaged: {exc}") from exc

    @_guarded
    def restore_published(self, descriptors: list[dict[str, Any]]) -> None:
        """Make each descriptor's asset a published row (info = the descriptor), in one transaction.

        Rows of other assets are kept; a row of the same asset is overwritten (its lease released)."""
        now = time.time()
        with self._tx() as db:
            for d in descriptors:
                at = d.get("published_at")
                created = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else now
                db.execute(
                    "INSERT INTO assets(id, state, source_name, info, error, owner, lease_until, created_at, updated_at,"
                    " search_title, search_artist) VALUES (?,?,?,?,NULL,NULL,NULL,?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET state=excluded.state, source_name=excluded.source_name,"
                    " info=excluded.info, error=NULL, owner=NULL, lease_until=NULL, updated_at=excluded.updated_at,"
                    " search_title=excluded.search_title, search_artist=excluded.search_artist",
                    (d["asset_id"], AssetState.PUBLISHED.value, d["source_name"], json.dumps(d, sort_keys=True),
                     created, now, *search_keys(d)),
                )


def state_update(state: AssetState, *, info: dict[str, Any] | None, error: dict[str, Any] | None, release: bool,
                 mark: str) -> tuple[str, list[Any]]:
    """The ``UPDATE assets`` of ``set_state`` for both backends (``mark``: the driver's placeholder, ``?`` or
    ``%s``); the caller appends the asset id.  A final or failed state releases the lease."""
    sets = ["state", "updated_at"]
    args: list[Any] = [state.value, time.time()]
    if info is not None:
        sets += ["info", "search_title", "search_artist"]
        args += [json.dumps(info, sort_keys=True), *search_keys(info)]
    if error is not None:
        sets.append("error")
        args.append(json.dumps(error, sort_keys=True))
    assigned = [f"{col}={mark}" for col in sets]
    if release or state in FINAL_STATES or state is AssetState.FAILED:
        assigned += ["owner=NULL", "lease_until=NULL"]
    return f"UPDATE assets SET {', '.join(assigned)} WHERE id={mark}", args


def owner_alive(owner: str) -> bool:
    """False only for a lease holder on this host whose process is gone (killed, crashed):
    its lease is dead now, so a rerun takes over at once instead of waiting for it to expire.
    Holders on other hosts are trusted until their lease runs out."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


RECORD = "id, state, source_name, info, error, created_at, updated_at"  # the columns of an AssetRecord


def fold(text: str) -> str:
    """The form titles, artists and queries are compared in: NFKC, then casefolded ("Ärzte" ~ "ärzte")."""
    return unicodedata.normalize("NFKC", text).casefold()


def search_keys(info: dict[str, Any] | None) -> tuple[str, str]:
    """(title, artist) of a record's ``info`` (its ``tags``), folded; '' where a tag is missing."""
    tags = (info or {}).get("tags") if isinstance(info, dict) else None
    tags = tags if isinstance(tags, dict) else {}
    return tuple(fold(v) if isinstance(v := tags.get(k), str) else "" for k in ("title", "artist"))  # type: ignore[return-value]


def like_pattern(q: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching ``q`` anywhere, folded: its own %, _ and \\ are literal."""
    escaped = fold(q).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter(state: AssetState | None, q: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (with a leading space, or empty) and its arguments for a state and a search."""
    terms: list[str] = []
    args: list[Any] = []
    if state is not None:
        terms.append("state=?")
        args.append(state.value)
    if q:
        terms.append("(search_title LIKE ? ESCAPE '\\' OR search_artist LIKE ? ESCAPE '\\')")
        args += [like_pattern(q)] * 2
    return (" WHERE " + " AND ".join(terms) if terms else ""), args


def _migrate(db: sqlite3.Connection) -> None:
    """Give a catalog made before search its columns, filled from each row's info (one transaction:
    another process opening it at the same time finds them there when it gets the lock)."""
    if all(c in _columns(db) for c in SEARCH_COLUMNS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        have = _columns(db)
        if not all(c in have for c in SEARCH_COLUMNS):
            for column in SEARCH_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE assets ADD COLUMN {column} TEXT")
            rows = db.execute("SELECT id, info FROM assets WHERE info IS NOT NULL").fetchall()
            for asset_id, info in rows:
                try:
                    keys = search_keys(json.loads(info))
                except ValueError:  # a damaged row: verify() reports it; it is simply not found by search
                    keys = ("", "")
                db.execute("UPDATE assets SET search_title=?, search_artist=? WHERE id=?", (*keys, asset_id))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(assets)")}


def _record(row: tuple[Any, ...]) -> AssetRecord:
    return AssetRecord(
        id=row[0],
        state=AssetState(row[1]),
        source_name=row[2],
        info=json.loads(row[3]) if row[3] else {},
        error=json.loads(row[4]) if row[4] else None,
        created_at=row[5],
        updated_at=row[6],
    )


class LeaseKeeper:
    """Renews a job's lease every third of its length while the job runs, on a thread of its own.

    A job may outlast its lease (a long master, a slow machine): without renewal
    another worker would see the lease expired, take the asset and clean the
    live job's staging.  If a renewal finds the lease gone (taken over after a
    stall), ``lost`` is set and the job must not publish; ``check()`` says so.
    """

    def __init__(self, catalog: Catalog, asset_id: str, *, owner: str, lease_s: float) -> None:
        self.catalog, self.asset_id, self.owner, self.lease_s = catalog, asset_id, owner, lease_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{asset_id[:8]}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.catalog.renew(self.asset_id, owner=self.owner, lease_s=self.lease_s):
                    self.lost = True
                    return
            except sqlite3.Error:  # a busy or briefly unavailable catalog: try again next period
                continue

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this job still holds its lease (call before publishing)."""
        if self.lost or not self.catalog.renew(self.asset_id, owner=self.owner, lease_s=self.lease_s):
            self.lost = True
            raise LeaseLost(f"the lease on {self.asset_id} was taken over by another worker; not publishing")


class LeaseLost(TonearmError):
    """Another worker holds this job's asset now."""

    code = "lease_lost"
