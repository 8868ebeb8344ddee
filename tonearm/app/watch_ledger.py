"""What a watcher has taken, and where each bucket listing resumes: a small SQLite file of its own.

A watcher is one process per drop folder or bucket prefix, so its memory of what it took is local
state, kept beside the data (``[watch] state_file``, default ``<data dir>/watch.sqlite3``), not in
the shared catalog: a file is identified by (source, key, size, tag), where the tag is mtime and
inode for a file or the ETag for an object, so a file replaced by other bytes under the same name is
taken again, and the same file seen after a restart is not.  The queue's content addressing (the
asset id is the SHA-256 of the bytes) is the final guard against doing the same bytes twice: the
ledger only saves the hashing and the extra job rows.

A row moves ``submitted`` -> ``finished`` once its job ended and the after-take policy was applied
(the job's final state is kept in ``outcome``), so a restart resumes the policy for jobs still
running when the watcher stopped.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Ledger", "Taken")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS taken (
  source TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, tag TEXT NOT NULL,
  job_id TEXT, asset_id TEXT, status TEXT NOT NULL, outcome TEXT, taken_at REAL NOT NULL,
  PRIMARY KEY (source, key, size, tag));
CREATE INDEX IF NOT EXISTS taken_open ON taken (source, status);
CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, after TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Taken:
    key: str
    size: int
    tag: str
    job_id: str | None
    asset_id: str | None
    status: str  # submitted | finished
    outcome: str | None  # the job's final state (or a code the watcher decided itself, e.g. too_large)


class Ledger:
    """One SQLite connection (WAL, autocommit) used by one watcher thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def seen(self, source: str, key: str, size: int, tag: str) -> bool:
        row = self.db.execute("SELECT 1 FROM taken WHERE source=? AND key=? AND size=? AND tag=?",
                              (source, key, size, tag)).fetchone()
        return row is not None

    def record(self, source: str, key: str, size: int, tag: str, *, job_id: str | None, asset_id: str | None,
               status: str = "submitted", outcome: str | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO taken VALUES (?,?,?,?,?,?,?,?,?)",
                        (source, key, size, tag, job_id, asset_id, status, outcome, time.time()))

    def finish(self, source: str, t: Taken, outcome: str) -> None:
        self.db.execute("UPDATE taken SET status='finished', outcome=? WHERE source=? AND key=? AND size=? AND tag=?",
                        (outcome, source, t.key, t.size, t.tag))

    def open_jobs(self, source: str) -> list[Taken]:
        rows = self.db.execute("SELECT key, size, tag, job_id, asset_id, status, outcome FROM taken "
                               "WHERE source=? AND status='submitted' ORDER BY taken_at", (source,)).fetchall()
        return [Taken(*r) for r in rows]

    def all(self, source: str) -> list[Taken]:
        rows = self.db.execute("SELECT key, size, tag, job_id, asset_id, status, outcome FROM taken "
                               "WHERE source=? ORDER BY taken_at", (source,)).fetchall()
        return [Taken(*r) for r in rows]

    def cursor(self, source: str) -> str:
        row = self.db.execute("SELECT after FROM cursors WHERE source=?", (source,)).fetchone()
        return row[0] if row else ""

    def set_cursor(self, source: str, after: str) -> None:
        self.db.execute("INSERT INTO cursors VALUES (?,?,?) ON CONFLICT(source) DO UPDATE SET after=excluded.after, "
                        "at=excluded.at", (source, after, time.time()))
