"""API keys of the management API: stored hashed in the catalog database, with scopes.

A key is ``tnk_<id>_<secret>``: ``id`` (8 hex digits) names the key in listings and logs, ``secret``
is 32 random bytes (URL-safe base64).  Only the SHA-256 of the whole key is stored, so a copy of the
database gives no usable key; a presented key is looked up by its id and its digest compared in
constant time.  The key itself is shown once, by ``tonearm keys create``.

Scopes: ``ingest`` (uploads, jobs), ``read`` (jobs, assets, metrics), ``admin`` (takedown, repackage,
cancel; implies the other two).  The table lives in the catalog database (``[catalog] url``: SQLite or
PostgreSQL), beside the catalog's own tables; one short SQL dialect serves both.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from tonearm.core.catalog_open import open_catalog
from tonearm.core.config import Config, ConfigError
from tonearm.core.errors import TonearmError

__all__ = ("SCOPES", "ApiKey", "KeyStore", "KeyNotFound", "parse_key")

SCOPES = ("ingest", "read", "admin")
KEY_RE = re.compile(r"tnk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
MAX_NAME = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)
"""


class KeyNotFound(TonearmError, KeyError):
    code = "key_not_found"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None

    def allows(self, scope: str) -> bool:
        return self.revoked_at is None and (scope in self.scopes or "admin" in self.scopes)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scopes": sorted(self.scopes), "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, digest) of a well-formed key, else None (never echo what was sent)."""
    m = KEY_RE.fullmatch(text)
    return (m.group(1), _digest(text)) if m else None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The ``api_keys`` table through one connection (a lock serialises the threads using it)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.postgres = cfg.catalog.is_postgres
        self._lock = threading.Lock()
        self._db: Any = None
        with self._lock:
            self._run(SCHEMA)

    def _connect(self) -> Any:
        """SQLite: a connection of our own to the catalog file (the catalog's schema made first: it refuses a
        file whose tables are not its own).  PostgreSQL: the catalog's own connections (reconnecting)."""
        catalog = open_catalog(self.cfg)
        if self.postgres:
            return catalog
        db = sqlite3.connect(self.cfg.catalog_path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _run(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction (the caller holds the lock)."""
        if self._db is None:
            self._db = self._connect()
        if self.postgres:
            def tx(db: Any) -> list[tuple[Any, ...]]:
                cur = db.execute(sql, tuple(params))
                return list(cur.fetchall()) if cur.description else []
            return self._db.run(tx)
        cur = self._db.execute(sql.replace("%s", "?"), tuple(params))
        return list(cur.fetchall()) if cur.description else []

    def create(self, scopes: Iterable[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key: the record and the key text (shown once, never stored)."""
        wanted = frozenset(scopes)
        bad = sorted(wanted - set(SCOPES))
        if not wanted or bad:
            raise ConfigError(f"--scope: one or more of {', '.join(SCOPES)}; got {', '.join(bad) or 'none'}")
        if len(name) > MAX_NAME or any(ord(c) < 32 or c == "\x7f" for c in name):
            raise ConfigError(f"--name: at most {MAX_NAME} printable characters")
        with self._lock:
            for _ in range(5):
                key_id = secrets.token_hex(4)
                if not self._run("SELECT 1 FROM api_keys WHERE id = %s", (key_id,)):
                    break
            text = f"tnk_{key_id}_{secrets.token_urlsafe(32)}"
            now = time.time()
            self._run("INSERT INTO api_keys (id, name, digest, scopes, created_at) VALUES (%s, %s, %s, %s, %s)",
                      (key_id, name, _digest(text), " ".join(sorted(wanted)), now))
        return ApiKey(key_id, name, wanted, now, None), text

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._run("SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
        return [ApiKey(r[0], r[1], frozenset(r[2].split()), r[3], r[4]) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            self._run("UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (time.time(), key_id))
        for key in self.list():
            if key.id == key_id:
                return key
        raise KeyNotFound(f"no API key with id {key_id[:16]!r}")

    def verify(self, presented: str) -> ApiKey | None:
        """The live key for a presented ``Authorization`` secret, or None (unknown, malformed or revoked)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, digest = parsed
        with self._lock:
            rows = self._run("SELECT name, digest, scopes, created_at, revoked_at FROM api_keys WHERE id = %s",
                             (key_id,))
        if not rows or not hmac.compare_digest(rows[0][1], digest) or rows[0][4] is not None:
            return None
        name, _, scopes, created, revoked = rows[0]
        return ApiKey(key_id, name, frozenset(scopes.split()), created, revoked)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


