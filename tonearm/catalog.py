"""The catalog: one row per content-addressed asset, with its state.

SQLite with WAL and ``BEGIN IMMEDIATE`` makes ``claim`` atomic across
processes: of two ingests of the same bytes, one takes the lease and does
the work, the other sees it busy or done.  A lease that expires (the worker
crashed) can be taken over, and the job resumes from a clean staging dir.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tonearm.model import AssetState

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
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS assets_created ON assets(created_at);
"""

FINAL_STATES = {AssetState.PUBLISHED, AssetState.QUARANTINED}


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
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
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
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

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
            if holder and holder != owner and until and until > now and _owner_alive(holder):
                return Claim.BUSY
            db.execute(
                "UPDATE assets SET owner=?, lease_until=?, updated_at=? WHERE id=?",
                (owner, now + lease_s, now, asset_id),
            )
            return Claim.CLAIMED

    def renew(self, asset_id: str, *, owner: str | None = None, lease_s: float = 600) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE assets SET lease_until=? WHERE id=? AND owner=?",
                (time.time() + lease_s, asset_id, owner or default_owner()),
            )

    def set_state(
        self,
        asset_id: str,
        state: AssetState,
        *,
        info: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        release: bool = False,
    ) -> None:
        sets = ["state=?", "updated_at=?"]
        args: list[Any] = [state.value, time.time()]
        if info is not None:
            sets.append("info=?")
            args.append(json.dumps(info, sort_keys=True))
        if error is not None:
            sets.append("error=?")
            args.append(json.dumps(error, sort_keys=True))
        if release or state in FINAL_STATES or state is AssetState.FAILED:
            sets += ["owner=NULL", "lease_until=NULL"]
        with self._tx() as db:
            db.execute(f"UPDATE assets SET {', '.join(sets)} WHERE id=?", (*args, asset_id))

    def get(self, asset_id: str) -> AssetRecord | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, state, source_name, info, error, created_at, updated_at FROM assets WHERE id=?",
                (asset_id,),
            ).fetchone()
        return _record(row) if row else None

    def list(self, *, limit: int = 50, offset: int = 0, state: AssetState | None = None) -> list[AssetRecord]:
        query = "SELECT id, state, source_name, info, error, created_at, updated_at FROM assets"
        args: list[Any] = []
        if state is not None:
            query += " WHERE state=?"
            args.append(state.value)
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        with closing(self._connect()) as db:
            rows = db.execute(query, (*args, limit, offset)).fetchall()
        return [_record(r) for r in rows]

    def count(self, *, state: AssetState | None = None) -> int:
        with closing(self._connect()) as db:
            if state is None:
                return db.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM assets WHERE state=?", (state.value,)).fetchone()[0]


def _owner_alive(owner: str) -> bool:
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
