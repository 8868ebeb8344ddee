"""The job queue on PostgreSQL: tonearm's ``tonearm_jobs`` rows plus procrastinate's jobs, one transaction.

``submit`` writes the job row and defers its procrastinate job (``procrastinate_defer_jobs_v1``, the
function procrastinate's own ``defer`` calls) in the same transaction, so a job is never queued
without its row nor recorded without being queued.  Both carry the asset id: the procrastinate job's
``lock`` (one running job per asset) and ``queueing_lock`` (one waiting), and a unique index on the
live rows of ``tonearm_jobs`` (one live ingest job per asset), under a per-asset advisory lock so
three submits of the same bytes at once return one job.

Every terminal state change writes its ``tonearm_events`` row (the outbox the webhooks are sent
from) in the transaction that changes the state.  The worker side (:mod:`tonearm.app.worker`) uses
the ``start`` / ``beat`` / ``finish`` / ``requeue`` methods below.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import psycopg
from procrastinate.schema import SchemaManager

from tonearm.app.job_types import ACTIVE, TERMINAL, Event, Job, JobNotFound, JobState, Tombstoned, check_submit
from tonearm.core.catalog_pg import PgCatalog
from tonearm.core.config import Config
from tonearm.core.model import AssetState

__all__ = ("PgQueue", "QUEUE", "TASK")

QUEUE = "ingest"
TASK = "tonearm.run_job"
SCHEMA = """
CREATE TABLE IF NOT EXISTS tonearm_jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'ingest',
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    filename TEXT NOT NULL,
    origin TEXT NOT NULL,
    priority INTEGER NOT NULL,
    asset_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    deaths INTEGER NOT NULL DEFAULT 0,
    running BOOLEAN NOT NULL DEFAULT false,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    error_code TEXT,
    error_message TEXT,
    progress JSONB NOT NULL DEFAULT '{}',
    worker TEXT,
    heartbeat_at DOUBLE PRECISION,
    pq_id BIGINT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS tonearm_jobs_state ON tonearm_jobs(state, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS tonearm_jobs_live_asset ON tonearm_jobs(asset_id, kind)
    WHERE state NOT IN ('published', 'quarantined', 'failed', 'cancelled');
CREATE TABLE IF NOT EXISTS tonearm_events (
    id BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    asset_id TEXT,
    job_id TEXT,
    at DOUBLE PRECISION NOT NULL,
    data JSONB NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS tonearm_tombstones (
    asset_id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);
"""
JOB_COLUMNS = ("id, state, source, filename, origin, priority, asset_id, attempts, error_code, error_message,"
               " progress, created_at, updated_at")
SCHEMA_LOCK = 0x746F6E66
EVENT_OF = {JobState.PUBLISHED: "published", JobState.QUARANTINED: "quarantined", JobState.FAILED: "failed"}


def _job(row: tuple[Any, ...]) -> Job:
    return Job(id=row[0], state=JobState(row[1]), source=row[2], filename=row[3], origin=row[4], priority=row[5],
               asset_id=row[6], attempts=row[7], error_code=row[8], error_message=row[9],
               progress=dict(row[10] or {}), created_at=row[11], updated_at=row[12])


def _asset_lock(asset_id: str) -> str:
    return f"asset:{asset_id}"


class PgQueue:
    """:class:`tonearm.app.jobs.JobQueue` on PostgreSQL (procrastinate)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.db = PgCatalog(cfg.catalog.url)  # the catalog's schema too: the jobs refer to its assets
        self.db.run(_create)

    def close(self) -> None:
        self.db.close()

    # -- intake -----------------------------------------------------------------------------------------------------

    def submit(self, source: str, *, filename: str | None = None, priority: int = 0, origin: str = "cli",
               force: bool = False, asset_id: str | None = None) -> Job:
        check_submit(priority, origin)
        source = str(source)
        if not source.startswith("s3://"):
            source = str(Path(source).absolute())
        name = _printable(filename or source.rsplit("/", 1)[-1])
        if asset_id is None and not source.startswith("s3://"):
            asset_id = _hash_local(self.cfg, Path(source))
        return self.db.run(lambda db: self._submit(db, "ingest", source, name, priority, origin, force, asset_id))

    def repackage(self, asset_id: str) -> Job:
        rec = self.db.get(asset_id)
        if rec is None or rec.state is not AssetState.PUBLISHED:
            raise JobNotFound(f"no published asset {asset_id}")
        return self.db.run(lambda db: self._submit(db, "repackage", asset_id, rec.source_name, 0, "api", True,
                                                   asset_id))

    def _submit(self, db: psycopg.Connection, kind: str, source: str, name: str, priority: int, origin: str,
                force: bool, asset_id: str | None) -> Job:
        now = time.time()
        state = JobState.QUEUED
        if asset_id is not None:
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_asset_lock(asset_id),))
            if db.execute("SELECT 1 FROM tonearm_tombstones WHERE asset_id=%s", (asset_id,)).fetchone():
                if not force:
                    raise Tombstoned(f"asset {asset_id} was taken down: submit again with force to re-ingest it",
                                     details={"asset_id": asset_id})
                db.execute("DELETE FROM tonearm_tombstones WHERE asset_id=%s", (asset_id,))
            live = db.execute(f"SELECT {JOB_COLUMNS} FROM tonearm_jobs WHERE asset_id=%s AND kind=%s AND state <>"
                              " ALL(%s)", (asset_id, kind, [s.value for s in TERMINAL])).fetchone()
            if live:
                return _job(live)  # the same bytes are already on their way: one job, one encode
            if kind == "ingest":
                row = db.execute("SELECT state FROM assets WHERE id=%s", (asset_id,)).fetchone()
                if row and row[0] == AssetState.PUBLISHED.value:
                    state = JobState.PUBLISHED  # done before: a job that is finished at once, no work
        job_id = uuid.uuid4().hex
        pq_id = None
        if state is JobState.QUEUED:
            lock = _asset_lock(asset_id) if asset_id else None  # one running job per asset, whatever its kind
            waiting = f"{kind}:{asset_id}" if asset_id else None  # one waiting job per asset and kind
            pq_id = db.execute(
                "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, %s, %s, %s, %s::jsonb, NULL)"
                "::procrastinate_job_to_defer_v1]))",
                (QUEUE, TASK, priority, lock, waiting, json.dumps({"job_id": job_id}))).fetchone()[0]
        row = db.execute(
            "INSERT INTO tonearm_jobs(id, kind, state, source, filename, origin, priority, asset_id, pq_id,"
            f" created_at, updated_at, finished_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING {JOB_COLUMNS}",
            (job_id, kind, state.value, source, name, origin, priority, asset_id, pq_id, now, now,
             now if state in TERMINAL else None)).fetchone()
        return _job(row)

    # -- reading ----------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self.db.run(lambda db: db.execute(f"SELECT {JOB_COLUMNS} FROM tonearm_jobs WHERE id=%s",
                                                (str(job_id),)).fetchone())
        return _job(row) if row else None

    def list(self, *, state: JobState | None = None, limit: int = 100) -> list[Job]:
        limit = max(1, min(int(limit), 1000))
        if state is None:
            rows = self.db.run(lambda db: db.execute(
                f"SELECT {JOB_COLUMNS} FROM tonearm_jobs ORDER BY created_at DESC, id LIMIT %s", (limit,)).fetchall())
        else:
            rows = self.db.run(lambda db: db.execute(
                f"SELECT {JOB_COLUMNS} FROM tonearm_jobs WHERE state=%s ORDER BY created_at DESC, id LIMIT %s",
                (JobState(state).value, limit)).fetchall())
        return [_job(r) for r in rows]

    def wait(self, job_ids: Sequence[str], timeout: float | None = None) -> list[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = [str(i) for i in job_ids]
        while True:
            rows = self.db.run(lambda db: db.execute(f"SELECT {JOB_COLUMNS} FROM tonearm_jobs WHERE id = ANY(%s)",
                                                     (ids,)).fetchall())
            jobs = {r[0]: _job(r) for r in rows}
            missing = [i for i in ids if i not in jobs]
            if missing:
                raise JobNotFound(f"no job {missing[0]}")
            if all(j.done for j in jobs.values()) or (deadline is not None and time.monotonic() > deadline):
                return [jobs[i] for i in ids]
            time.sleep(0.2)

    def events_since(self, after_id: int, limit: int = 100) -> list[Event]:
        rows = self.db.run(lambda db: db.execute(
            "SELECT id, type, asset_id, job_id, at, data FROM tonearm_events WHERE id > %s ORDER BY id LIMIT %s",
            (int(after_id), max(1, min(int(limit), 1000)))).fetchall())
        return [Event(id=r[0], type=r[1], asset_id=r[2], job_id=r[3], at=r[4], data=dict(r[5] or {})) for r in rows]

    def stats(self) -> dict[str, Any]:
        def tx(db: psycopg.Connection) -> dict[str, Any]:
            counts = dict(db.execute("SELECT state, count(*) FROM tonearm_jobs GROUP BY state").fetchall())
            workers = db.execute("SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() -"
                                 " make_interval(secs => %s)", (self.cfg.jobs.stalled_s,)).fetchone()[0]
            return {"jobs": {s.value: int(counts.get(s.value, 0)) for s in JobState}, "workers": int(workers)}

        return self.db.run(tx)

    # -- control ----------------------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        def tx(db: psycopg.Connection) -> Job:
            row = db.execute("SELECT state, pq_id, running FROM tonearm_jobs WHERE id=%s FOR UPDATE",
                             (str(job_id),)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id}")
            state, pq_id, running = JobState(row[0]), row[1], row[2]
            if state not in TERMINAL:
                waiting = pq_id is not None and db.execute(
                    "UPDATE procrastinate_jobs SET status='cancelled' WHERE id=%s AND status='todo' RETURNING id",
                    (pq_id,)).fetchone()
                if waiting or not running:
                    _finish(db, str(job_id), JobState.CANCELLED, "cancelled", "cancelled before it ran")
                else:  # its worker kills the job's processes within [jobs] poll_s and records it
                    db.execute("UPDATE tonearm_jobs SET cancel_requested=true, updated_at=%s WHERE id=%s",
                               (time.time(), str(job_id)))
            return _job(db.execute(f"SELECT {JOB_COLUMNS} FROM tonearm_jobs WHERE id=%s", (str(job_id),)).fetchone())

        return self.db.run(tx)

    def take_down(self, asset_id: str) -> None:
        def tx(db: psycopg.Connection) -> None:
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_asset_lock(asset_id),))
            db.execute("INSERT INTO tonearm_tombstones(asset_id, at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (asset_id, time.time()))
            db.execute("DELETE FROM assets WHERE id=%s", (asset_id,))
            db.execute("INSERT INTO tonearm_events(type, asset_id, job_id, at, data) VALUES ('taken_down', %s,"
                       " NULL, %s, '{}')", (asset_id, time.time()))

        self.db.run(tx)

    def is_tombstoned(self, asset_id: str) -> bool:
        return bool(self.db.run(lambda db: db.execute("SELECT 1 FROM tonearm_tombstones WHERE asset_id=%s",
                                                      (asset_id,)).fetchone()))

    # -- the worker's side ------------------------------------------------------------------------------------------

    def start(self, job_id: str, worker: str) -> tuple[str, dict[str, Any]]:
        """Begin a run: ("run", job) or why not ("poison" after [jobs] max_deaths deaths, "done", "cancelled")."""
        max_deaths = self.cfg.jobs.max_deaths

        def tx(db: psycopg.Connection) -> tuple[str, dict[str, Any]]:
            row = db.execute("SELECT state, running, deaths, cancel_requested, kind, source, filename, asset_id,"
                             " attempts, heartbeat_at FROM tonearm_jobs WHERE id=%s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return "done", {}
            state, running, deaths, cancel, kind, source, filename, asset_id, attempts, beat = row
            if running and beat and beat > time.time() - self.cfg.jobs.stalled_s:
                return "busy", {}  # its last run still beats (taken back too early): leave it be, come back later
            if JobState(state) in TERMINAL:
                return "done", {}
            if cancel:
                _finish(db, job_id, JobState.CANCELLED, "cancelled", "cancelled")
                return "cancelled", {}
            if running:  # the last run never reported back: its worker or its process died
                deaths += 1
            if deaths >= max_deaths:
                _finish(db, job_id, JobState.FAILED, "poison",
                        f"the job's process died {deaths} times (a worker killed or crashed mid-job); not retried",
                        deaths=deaths)
                return "poison", {}
            now = time.time()
            db.execute("UPDATE tonearm_jobs SET running=true, deaths=%s, attempts=attempts+1, worker=%s,"
                       " heartbeat_at=%s, started_at=COALESCE(started_at, %s), updated_at=%s,"
                       " state=%s, progress='{}' WHERE id=%s",
                       (deaths, worker, now, now, now, JobState.VALIDATING.value, job_id))
            return "run", {"id": job_id, "kind": kind, "source": source, "filename": filename, "asset_id": asset_id,
                           "attempt": attempts + 1}

        return self.db.run(tx)

    def beat(self, job_id: str, *, state: JobState | None = None, progress: dict[str, float] | None = None,
             asset_id: str | None = None) -> bool:
        """Heartbeat (with a new state or progress, if any); True if the job was asked to cancel."""
        sets, args = ["heartbeat_at=%s", "updated_at=%s"], [time.time(), time.time()]
        if state is not None:
            sets.append("state=%s")
            args.append(JobState(state).value)
        if progress is not None:
            sets.append("progress=%s::jsonb")
            args.append(json.dumps(progress))
        if asset_id is not None:
            sets.append("asset_id=COALESCE(asset_id, %s)")
            args.append(asset_id)
        row = self.db.run(lambda db: db.execute(
            f"UPDATE tonearm_jobs SET {', '.join(sets)} WHERE id=%s AND running RETURNING cancel_requested",
            (*args, job_id)).fetchone())
        return bool(row and row[0])

    def finish(self, job_id: str, state: JobState, code: str | None = None, message: str | None = None, *,
               asset_id: str | None = None, data: dict[str, Any] | None = None) -> None:
        self.db.run(lambda db: _finish(db, job_id, state, code, message, asset_id=asset_id, data=data))

    def requeue(self, job_id: str, *, died: bool, code: str, message: str) -> int:
        """End a run that will be tried again; returns the job's runs so far."""
        def tx(db: psycopg.Connection) -> int:
            row = db.execute("UPDATE tonearm_jobs SET running=false, state='queued', deaths=deaths+%s,"
                             " error_code=%s, error_message=%s, updated_at=%s WHERE id=%s RETURNING attempts",
                             (1 if died else 0, code, message[:2000], time.time(), job_id)).fetchone()
            return int(row[0]) if row else 0

        return self.db.run(tx)

    def stalled(self, older_than_s: float) -> list[int]:
        """procrastinate ids of running jobs whose run stopped beating (the lease backstop behind
        procrastinate's own stalled-worker detection)."""
        rows = self.db.run(lambda db: db.execute(
            "SELECT p.id FROM tonearm_jobs j JOIN procrastinate_jobs p ON p.id = j.pq_id WHERE j.running AND"
            " j.heartbeat_at < %s AND p.status = 'doing'", (time.time() - older_than_s,)).fetchall())
        return [r[0] for r in rows]


def _finish(db: psycopg.Connection, job_id: str, state: JobState, code: str | None, message: str | None, *,
            asset_id: str | None = None, data: dict[str, Any] | None = None, deaths: int | None = None) -> None:
    """A terminal state, and its outbox event, in the caller's transaction."""
    now = time.time()
    row = db.execute(
        "UPDATE tonearm_jobs SET state=%s, running=false, error_code=%s, error_message=%s, updated_at=%s,"
        " finished_at=%s, asset_id=COALESCE(%s, asset_id), deaths=COALESCE(%s, deaths) WHERE id=%s"
        " RETURNING asset_id, source, filename, attempts",
        (state.value, code, (message or "")[:2000] or None, now, now, asset_id, deaths, job_id)).fetchone()
    if row is not None and state in EVENT_OF:
        payload = {"source": row[1], "filename": row[2], "attempts": row[3], **({"error_code": code} if code else {}),
                   **(data or {})}
        db.execute("INSERT INTO tonearm_events(type, asset_id, job_id, at, data) VALUES (%s,%s,%s,%s,%s::jsonb)",
                   (EVENT_OF[state], row[0], job_id, now, json.dumps(payload)))


def _create(db: psycopg.Connection) -> None:
    db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    if db.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
        db.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
    db.execute(SCHEMA)  # type: ignore[arg-type]


def _hash_local(cfg: Config, path: Path) -> str | None:
    """The content id of a local master (None if it cannot be read now: the worker reports why)."""
    from ingest import Rejected, content_id

    try:
        return content_id(path, max_bytes=cfg.ingest.max_bytes)
    except (Rejected, OSError):
        return None


def _printable(name: str) -> str:
    from ingest.names import printable

    return printable(name)[:255]


ACTIVE_STATES = ACTIVE  # re-exported for the worker's metrics
