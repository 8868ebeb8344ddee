"""The catalog: one row per content-addressed asset, with its state.

SQLite with WAL and ``BEGIN IMMEDIATE`` makes ``claim`` atomic across
processes: of two ingests of the same bytes, one takes the lease and does
the work, the other sees it busy or done.  A lease that expires (the worker
crashed) can be taken over, and the job resumes from a clean staging dir.

A catalog that cannot be used (not a database, truncated, another schema, a
directory in its place) or cannot be written (a full disk) raises
``CatalogError``, whose message names the file and what to do.  The catalog is
derived data: ``rebuild`` recreates it from the published descriptors.
"""

from __future__ import annotations

import enum
import errno
import functools
import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tonearm.core.errors import TonearmError
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
COLUMNS = ("id", "state", "source_name", "info", "error", "owner", "lease_until", "created_at", "updated_at")
REBUILD_HINT = "run 'tonearm catalog rebuild' to move it aside and recreate it from the published assets"


class CatalogError(TonearmError, ValueError, sqlite3.DatabaseError):
    """The catalog file cannot be used; the message names the file and says what to do.

    ``code`` is stable: ``catalog_unreadable`` (not a database, corrupt, another schema, a
    directory in its place) here, ``disk_full`` in ``CatalogFull``.  It is also a
    ``sqlite3.DatabaseError``, so code that tolerates SQLite errors keeps doing so.
    """

    code = "catalog_unreadable"

    def __init__(self, path: Path | str, reason: str, hint: str = REBUILD_HINT) -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        return f"catalog {self.path} is unreadable ({self.reason}): {self.hint}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: worker processes hand it to the parent
        return (type(self), (self.path, self.reason, self.hint))


class CatalogFull(CatalogError):
    """No space left on the filesystem holding the catalog (SQLITE_FULL, ENOSPC, no inode left)."""

    code = "disk_full"

    def _message(self) -> str:
        return (f"catalog {self.path} cannot be written: the disk is full ({self.reason}): "
                f"free space on {filesystem_of(self.path)} and run again")


def filesystem_of(path: Path | str) -> Path:
    """The mount point of the filesystem that holds (or would hold) ``path`` (symlinks followed)."""
    p = Path(os.path.realpath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def out_of_space(path: Path | str, *, margin: int = 128 * 1024) -> bool:
    """True when the filesystem holding ``path`` has (almost) no block or no inode left."""
    try:
        st = os.statvfs(filesystem_of(path))
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return free * st.f_frsize < margin or (st.f_files > 0 and st.f_favail == 0)


def _translate(path: Path, exc: BaseException) -> CatalogError | None:
    """The ``CatalogError`` an SQLite or OS error on the catalog stands for; None: not ours to explain."""
    if isinstance(exc, CatalogError):
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return CatalogFull(path, exc.strerror or str(exc))
        return None
    if not isinstance(exc, sqlite3.Error):
        return None
    msg = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL or "database or disk is full" in msg:
        return CatalogFull(path, msg)
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and out_of_space(path):
        return CatalogFull(path, msg)  # growing the WAL index or creating a file failed for want of space
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_IOERR):
        return CatalogError(path, msg)
    if primary == sqlite3.SQLITE_CANTOPEN:
        return CatalogError(path, _cantopen_reason(path, msg))
    if primary == sqlite3.SQLITE_READONLY:
        return CatalogError(path, msg, hint="make it and its folder writable for this user and run again")
    if "no such table" in msg or "no such column" in msg:
        return CatalogError(path, f"unexpected schema: {msg}")
    return None


def _cantopen_reason(path: Path, msg: str) -> str:
    if path.is_dir():
        return f"{msg}: it is a directory"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{msg}: permission denied"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{msg}: its folder {path.parent} is not writable (SQLite creates -wal and -shm files beside it)"
    return msg


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(fn: _F) -> _F:
    """Turn SQLite and OS errors on the catalog into ``CatalogError`` where one explains them."""

    @functools.wraps(fn)
    def wrapper(self: "Catalog", *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            err = _translate(self.path, exc)
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

    @_guarded
    def get(self, asset_id: str) -> AssetRecord | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, state, source_name, info, error, created_at, updated_at FROM assets WHERE id=?",
                (asset_id,),
            ).fetchone()
        return _record(row) if row else None

    @_guarded
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

    @_guarded
    def count(self, *, state: AssetState | None = None) -> int:
        with closing(self._connect()) as db:
            if state is None:
                return db.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM assets WHERE state=?", (state.value,)).fetchone()[0]

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
                    "INSERT INTO assets(id, state, source_name, info, error, owner, lease_until, created_at, updated_at)"
                    " VALUES (?,?,?,?,NULL,NULL,NULL,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET state=excluded.state, source_name=excluded.source_name,"
                    " info=excluded.info, error=NULL, owner=NULL, lease_until=NULL, updated_at=excluded.updated_at",
                    (d["asset_id"], AssetState.PUBLISHED.value, d["source_name"], json.dumps(d, sort_keys=True),
                     created, now),
                )


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


# -- rebuild -----------------------------------------------------------------------------------------------

SIDECARS = ("", "-wal", "-shm")  # SQLite's files of one WAL database: the file, its log, the log's index


@dataclass
class RebuildReport:
    path: Path
    restored: list[str]  # asset ids now published in the catalog, sorted
    skipped: list[tuple[str, str]]  # (descriptor location, why it was not used)
    moved_aside: Path | None = None  # where the unreadable catalog went
    moved_reason: str | None = None


def rebuild(path: Path | str, storage: Any) -> RebuildReport:
    """Recreate the catalog at ``path`` from the published descriptors of ``storage``.

    Every descriptor is read before anything is written, so a storage that cannot be listed
    changes nothing.  A readable catalog is kept, with its other rows (quarantined, failed),
    and each published asset's row is restored in it.  An unreadable one is moved aside to
    ``<name>.corrupt-<UTC time>`` (with its -wal and -shm files) and a new catalog is built
    beside it and renamed into place.  Descriptors that are not valid JSON objects, or whose
    ``asset_id`` is not their folder's name, are skipped and reported.
    """
    path = Path(path)
    descriptors, skipped = _published_descriptors(storage)
    report = RebuildReport(path=path, restored=sorted(d["asset_id"] for d in descriptors), skipped=skipped)
    present = [path.with_name(path.name + s) for s in SIDECARS if _exists(path.with_name(path.name + s))]
    if _exists(path):
        try:
            catalog = Catalog(path)
            catalog.verify()
        except CatalogFull:
            raise
        except CatalogError as exc:
            report.moved_reason = exc.reason
        else:
            catalog.restore_published(descriptors)
            return report
    elif present:
        report.moved_reason = "its -wal/-shm files were left without it"
    if present:
        report.moved_aside = _move_aside(path)
    tmp = path.with_name(f".{path.name}.rebuild-{os.getpid()}")
    _remove_database(tmp)
    try:
        fresh = Catalog(tmp)
        fresh.restore_published(descriptors)
        if _exists(tmp.with_name(tmp.name + "-wal")):  # the last connection normally folds the log in
            with closing(sqlite3.connect(tmp)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(tmp, path)
    except CatalogError as exc:
        raise type(exc)(path, exc.reason, exc.hint) from exc  # name the catalog, not the temporary file
    except OSError as exc:
        err = _translate(path, exc)
        if err is None:
            raise
        raise err from exc
    finally:
        _remove_database(tmp)
    return report


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _remove_database(p: Path) -> None:
    for s in SIDECARS:
        p.with_name(p.name + s).unlink(missing_ok=True)


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(_exists(aside.with_name(aside.name + s)) for s in SIDECARS):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for s in SIDECARS:
        src = path.with_name(path.name + s)
        if _exists(src):
            os.rename(src, aside.with_name(aside.name + s))
    return aside


def _published_descriptors(storage: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from tonearm.storage import is_asset_id

    good: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for name in sorted(storage.list_published()):
        where = _descriptor_location(storage, name)
        if not is_asset_id(name):
            skipped.append((where, "its folder is not an asset id"))
            continue
        try:
            d = storage.read_descriptor(name)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            skipped.append((where, f"not valid JSON ({exc})"))
            continue
        except OSError as exc:
            skipped.append((where, f"cannot be read ({exc.strerror or exc})"))
            continue
        if d is None:  # removed since it was listed
            continue
        if not isinstance(d, dict):
            skipped.append((where, "not a JSON object"))
        elif d.get("asset_id") != name:
            skipped.append((where, f"its asset_id {d.get('asset_id')} does not match its folder {name}"))
        elif not isinstance(d.get("source_name"), str) or not d["source_name"]:
            skipped.append((where, "it has no source_name"))
        else:
            good.append(d)
    return good, skipped


def _descriptor_location(storage: Any, asset_id: str) -> str:
    from tonearm.storage import DESCRIPTOR

    uri = getattr(storage, "descriptor_uri", None)
    if callable(uri):
        return str(uri(asset_id))
    published = getattr(storage, "published_root", Path(storage.root) / "published")
    return str(Path(published) / asset_id / DESCRIPTOR)
