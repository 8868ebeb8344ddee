"""The job queue with the embedded SQLite catalog: jobs run in this process's own pool, on one machine.

``tonearm watch`` and ``tonearm api`` without a server keep working: their jobs are rows in the
catalog file (tables ``jobs``, ``job_events``, ``tombstones`` beside ``assets``) and run here, each
in a child process of its own exactly as a ``tonearm worker`` runs them (the same
:class:`tonearm.app.worker.Runner`: stages, progress, cancellation, retries, poison).  Rows still
queued or running when the process stopped are run again by the next ``LocalQueue`` opened on the
catalog, so nothing is lost across restarts.  ``tonearm ingest`` with SQLite keeps its own batch
(``tonearm.app.batch``).  Only one process should run a catalog's local jobs at a time; for more,
use PostgreSQL and ``tonearm worker``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from tonearm.app.job_types import TERMINAL, Event, Job, JobNotFound, JobState, Tombstoned, check_submit
from tonearm.core.catalog import Catalog
from tonearm.core.config import Config
from tonearm.core.model import AssetState

__all__ = ("LocalQueue",)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL, filename TEXT NOT NULL,
    origin TEXT NOT NULL, priority INTEGER NOT NULL, asset_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    deaths INTEGER NOT NULL DEFAULT 0, running INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_code TEXT, error_message TEXT, progress TEXT NOT NULL DEFAULT '{}', worker TEXT, heartbeat_at REAL,
    not_before REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, priority, created_at);
CREATE TABLE IF NOT EXISTS job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, asset_id TEXT, job_id TEXT, at REAL NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS tombstones (asset_id TEXT PRIMARY KEY, at REAL NOT NULL);
"""
COLS = ("id, state, source, filename, origin, priority, asset_id, attempts, error_code, error_message, progress,"
        " created_at, updated_at")
EVENT_OF = {JobState.PUBLISHED: "published", JobState.QUARANTINED: "quarantined", JobState.FAILED: "failed"}
LIVE = tuple(s.value for s in JobState if s not in TERMINAL)


def _job(r: tuple[Any, ...]) -> Job:
    return Job(id=r[0], state=JobState(r[1]), source=r[2], filename=r[3], origin=r[4], priority=r[5], asset_id=r[6],
               attempts=r[7], error_code=r[8], error_message=r[9], progress=json.loads(r[10] or "{}"),
               created_at=r[11], updated_at=r[12])


class LocalQueue:
    """:class:`tonearm.app.jobs.JobQueue` on the SQLite catalog, run by a pool in this process."""

    def __init__(self, cfg: Config, *, run: bool = True) -> None:
        self.cfg = cfg
        self.catalog = Catalog(cfg.catalog_path)  # creates and checks the file first
        self.path = cfg.catalog_path
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.executescript(SCHEMA)
        if run:  # the process that runs this catalog's jobs takes back what a previous one left unfinished;
            # a reader (run=False: the API, a webhook sender) must not relabel jobs another process is running
            with self._tx() as db:
                db.execute("UPDATE jobs SET state='queued', running=running WHERE state NOT IN (%s)"
                           % ",".join("?" * len(TERMINAL)), [s.value for s in TERMINAL])
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if run:
            self._thread = threading.Thread(target=self._serve, name="tonearm-local-jobs", daemon=True)
            self._thread.start()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    # -- the JobQueue protocol --------------------------------------------------------------------------------------

    def submit(self, source: str, *, filename: str | None = None, priority: int = 0, origin: str = "cli",
               force: bool = False, asset_id: str | None = None) -> Job:
        from tonearm.app.queue_pg import _hash_local, _printable

        check_submit(priority, origin)
        source = str(source) if str(source).startswith("s3://") else str(Path(source).absolute())
        if asset_id is None and not source.startswith("s3://"):
            asset_id = _hash_local(self.cfg, Path(source))
        job = self._submit("ingest", source, _printable(filename or source.rsplit("/", 1)[-1]), priority, origin,
                           force, asset_id)
        self._wake.set()
        return job

    def repackage(self, asset_id: str) -> Job:
        rec = self.catalog.get(asset_id)
        if rec is None or rec.state is not AssetState.PUBLISHED:
            raise JobNotFound(f"no published asset {asset_id}")
        job = self._submit("repackage", asset_id, rec.source_name, 0, "api", True, asset_id)
        self._wake.set()
        return job

    def _submit(self, kind: str, source: str, name: str, priority: int, origin: str, force: bool,
                asset_id: str | None) -> Job:
        now, state = time.time(), JobState.QUEUED
        with self._tx() as db:
            if asset_id is not None:
                if db.execute("SELECT 1 FROM tombstones WHERE asset_id=?", (asset_id,)).fetchone():
                    if not force:
                        raise Tombstoned(f"asset {asset_id} was taken down: submit again with force to re-ingest it",
                                         details={"asset_id": asset_id})
                    db.execute("DELETE FROM tombstones WHERE asset_id=?", (asset_id,))
                live = db.execute(f"SELECT {COLS} FROM jobs WHERE asset_id=? AND kind=? AND state IN (%s)"
                                  % ",".join("?" * len(LIVE)), (asset_id, kind, *LIVE)).fetchone()
                if live:
                    return _job(live)
                row = db.execute("SELECT state FROM assets WHERE id=?", (asset_id,)).fetchone()
                if kind == "ingest" and row and row[0] == AssetState.PUBLISHED.value:
                    state = JobState.PUBLISHED
            job_id = uuid.uuid4().hex
            db.execute("INSERT INTO jobs(id, kind, state, source, filename, origin, priority, asset_id, created_at,"
                       " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (job_id, kind, state.value, source, name, origin, priority, asset_id, now, now))
            return _job(db.execute(f"SELECT {COLS} FROM jobs WHERE id=?", (job_id,)).fetchone())

    def get(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {COLS} FROM jobs WHERE id=?", (str(job_id),)).fetchone()
        return _job(row) if row else None

    def list(self, *, state: JobState | None = None, limit: int = 100) -> list[Job]:
        where, args = (" WHERE state=?", [JobState(state).value]) if state else ("", [])
        with self._tx() as db:
            rows = db.execute(f"SELECT {COLS} FROM jobs{where} ORDER BY created_at DESC, id LIMIT ?",
                              (*args, max(1, min(int(limit), 1000)))).fetchall()
        return [_job(r) for r in rows]

    def wait(self, job_ids: Sequence[str], timeout: float | None = None) -> list[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = [self.get(i) for i in job_ids]
            if any(j is None for j in jobs):
                raise JobNotFound(f"no job {job_ids[jobs.index(None)]}")
            if all(j.done for j in jobs) or (deadline is not None and time.monotonic() > deadline):  # type: ignore[union-attr]
                return jobs  # type: ignore[return-value]
            time.sleep(0.2)

    def cancel(self, job_id: str) -> Job:
        with self._tx() as db:
            row = db.execute("SELECT state, running FROM jobs WHERE id=?", (str(job_id),)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id}")
            if JobState(row[0]) not in TERMINAL:
                if row[1]:
                    db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (str(job_id),))
                else:
                    _finish(db, str(job_id), JobState.CANCELLED, "cancelled", "cancelled before it ran")
        return self.get(job_id)  # type: ignore[return-value]

    def take_down(self, asset_id: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO tombstones(asset_id, at) VALUES (?, ?)", (asset_id, time.time()))
            db.execute("DELETE FROM assets WHERE id=?", (asset_id,))
            db.execute("INSERT INTO job_events(type, asset_id, at) VALUES ('taken_down', ?, ?)", (asset_id, time.time()))

    def is_tombstoned(self, asset_id: str) -> bool:
        with self._tx() as db:
            return bool(db.execute("SELECT 1 FROM tombstones WHERE asset_id=?", (asset_id,)).fetchone())

    def events_since(self, after_id: int, limit: int = 100) -> list[Event]:
        with self._tx() as db:
            rows = db.execute("SELECT id, type, asset_id, job_id, at, data FROM job_events WHERE id > ? ORDER BY id"
                              " LIMIT ?", (int(after_id), max(1, min(int(limit), 1000)))).fetchall()
        return [Event(id=r[0], type=r[1], asset_id=r[2], job_id=r[3], at=r[4], data=json.loads(r[5])) for r in rows]

    def stats(self) -> dict[str, Any]:
        with self._tx() as db:
            counts = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        return {"jobs": {s.value: int(counts.get(s.value, 0)) for s in JobState},
                "workers": int(self._thread is not None and self._thread.is_alive())}

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    # -- the runner's side (the same calls as PgQueue's) ------------------------------------------------------------

    def start(self, job_id: str, worker: str) -> tuple[str, dict[str, Any]]:
        with self._tx() as db:
            row = db.execute("SELECT state, running, deaths, cancel_requested, kind, source, filename, asset_id,"
                             " attempts FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or JobState(row[0]) in TERMINAL:
                return "done", {}
            state, running, deaths, cancel, kind, source, filename, asset_id, attempts = row
            if cancel:
                _finish(db, job_id, JobState.CANCELLED, "cancelled", "cancelled")
                return "cancelled", {}
            deaths += 1 if running else 0
            if deaths >= self.cfg.jobs.max_deaths:
                _finish(db, job_id, JobState.FAILED, "poison",
                        f"the job's process died {deaths} times (a worker killed or crashed mid-job); not retried")
                return "poison", {}
            now = time.time()
            db.execute("UPDATE jobs SET running=1, deaths=?, attempts=attempts+1, worker=?, heartbeat_at=?,"
                       " updated_at=?, state='validating', progress='{}' WHERE id=?", (deaths, worker, now, now, job_id))
            return "run", {"id": job_id, "kind": kind, "source": source, "filename": filename, "asset_id": asset_id,
                           "attempt": attempts + 1}

    def beat(self, job_id: str, *, state: JobState | None = None, progress: dict[str, float] | None = None,
             asset_id: str | None = None) -> bool:
        sets, args = ["heartbeat_at=?", "updated_at=?"], [time.time(), time.time()]
        for col, val in (("state", state and JobState(state).value), ("progress", progress and json.dumps(progress))):
            if val:
                sets.append(f"{col}=?")
                args.append(val)
        with self._tx() as db:
            row = db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND running=1 RETURNING cancel_requested",
                             (*args, job_id)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: str, state: JobState, code: str | None = None, message: str | None = None, *,
               asset_id: str | None = None, data: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            _finish(db, job_id, state, code, message, asset_id=asset_id, data=data)

    def requeue(self, job_id: str, *, died: bool, code: str, message: str, delay: float = 0.0) -> int:
        with self._tx() as db:
            row = db.execute("UPDATE jobs SET running=0, state='queued', deaths=deaths+?, error_code=?,"
                             " error_message=?, updated_at=? WHERE id=? RETURNING attempts",
                             (int(died), code, message[:2000], time.time(), job_id)).fetchone()
        return int(row[0]) if row else 0

    # -- the pool ---------------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        import os
        import socket

        from tonearm.app.worker import Retry, Runner
        from tonearm.app.worker_metrics import Metrics

        runner = Runner(self.cfg, self, f"{socket.gethostname()}:{os.getpid()}", Metrics(self))  # type: ignore[arg-type]
        runner.warm()
        slots = asyncio.Semaphore(self.cfg.jobs.concurrency or 1)
        running: set[str] = set()

        async def one(job_id: str) -> None:
            try:
                await runner.run(job_id)
            except Retry as r:
                await asyncio.to_thread(self._delay, job_id, r.delay)
            finally:
                running.discard(job_id)
                slots.release()
                self._wake.set()

        tasks: set[asyncio.Task[None]] = set()
        while not self._closed.is_set():
            job_id = await asyncio.to_thread(self._next, running)
            if job_id is None:
                await asyncio.to_thread(self._wake.wait, 0.5)
                self._wake.clear()
                continue
            await slots.acquire()
            running.add(job_id)
            task = asyncio.create_task(one(job_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        runner.kill_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.aclose()

    def _next(self, running: set[str]) -> str | None:
        with self._tx() as db:
            rows = db.execute("SELECT id FROM jobs WHERE state='queued' AND not_before <= ? ORDER BY priority DESC,"
                              " created_at LIMIT 50", (time.time(),)).fetchall()
        return next((r[0] for r in rows if r[0] not in running), None)

    def _delay(self, job_id: str, seconds: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET not_before=? WHERE id=?", (time.time() + seconds, job_id))


def _finish(db: sqlite3.Connection, job_id: str, state: JobState, code: str | None, message: str | None, *,
            asset_id: str | None = None, data: dict[str, Any] | None = None) -> None:
    now = time.time()
    row = db.execute("UPDATE jobs SET state=?, running=0, error_code=?, error_message=?, updated_at=?,"
                     " asset_id=COALESCE(?, asset_id) WHERE id=? RETURNING asset_id, source, filename, attempts",
                     (state.value, code, (message or "")[:2000] or None, now, asset_id, job_id)).fetchone()
    if row is not None and state in EVENT_OF:
        payload = {"source": row[1], "filename": row[2], "attempts": row[3], **({"error_code": code} if code else {}),
                   **(data or {})}
        db.execute("INSERT INTO job_events(type, asset_id, job_id, at, data) VALUES (?,?,?,?,?)",
                   (EVENT_OF[state], row[0], job_id, now, json.dumps(payload)))
