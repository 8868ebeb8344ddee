"""``tonearm worker``: runs queued jobs (procrastinate on PostgreSQL) until SIGTERM.

Each run of a job is a child process (:mod:`tonearm.app.tasks`) in a session of its own, started from
the event loop's thread with ``PR_SET_PDEATHSIG``: cancelling the job, shutting the worker down or
killing it (even with ``kill -9``) kills the job's process, whose ffmpeg dies with it.  The worker
reads the child's stage and progress lines, writes them to the job's row with a heartbeat every
``[jobs] poll_s`` (which also reads a cancellation request), and records the outcome:

- published / quarantined: final at once (a rejected master is never retried);
- a transient failure (storage, catalog, a lost lease, a timeout): retried with exponential backoff
  (``retry_base_s * 2**(n-1)``) up to ``retry_attempts`` runs, then failed;
- the child killed or crashed without an outcome: a death; after ``max_deaths`` the job fails as
  ``poison`` instead of taking down one worker after another;
- SIGTERM: no new jobs; running ones finish within ``--drain`` seconds, else are killed and handed
  back to the queue at once (not counted as deaths).

A worker that dies leaves its procrastinate job ``doing``: every worker sweeps for jobs of workers
whose heartbeat stopped (procrastinate's ``get_stalled_jobs``) and, as a backstop for its defects
(#1518), for running job rows whose own heartbeat stopped, and puts them back in the queue.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from tonearm.app.job_types import JobState
from tonearm.app.queue_pg import QUEUE, TASK, PgQueue
from tonearm.app.tasks import config_payload
from tonearm.app.worker_metrics import Metrics
from tonearm.core.config import Config
from tonearm.core.ffmpeg import die_with_parent

log = logging.getLogger("tonearm.app.worker")

__all__ = ("run_worker", "TRANSIENT")

# Failures worth another run: the job's bytes are fine, something around them was not.
TRANSIENT = frozenset({"storage_error", "disk_full", "busy", "lease_lost", "catalog_unreadable", "ffmpeg_timeout",
                       "internal_error", "worker_crashed"})
STAGES = {s.value: s for s in (JobState.VALIDATING, JobState.TRANSCODING, JobState.PACKAGING, JobState.PUBLISHING)}


class Retry(Exception):
    """Raised by a job's task to have procrastinate run it again after ``delay`` seconds."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay = delay


class _Obey(BaseRetryStrategy):
    """The task decides (it knows deaths, attempts and error codes); procrastinate schedules."""

    def get_retry_decision(self, *, exception: BaseException, job: Any) -> RetryDecision | None:
        if isinstance(exception, Retry):
            return RetryDecision(retry_in={"seconds": exception.delay})
        if isinstance(exception, (asyncio.CancelledError, pexc.JobAborted)):
            return RetryDecision(retry_in={"seconds": 0})  # handed back at shutdown
        return None


class Runner:
    def __init__(self, cfg: Config, queue: PgQueue, name: str, metrics: Metrics) -> None:
        self.cfg, self.queue, self.name, self.metrics = cfg, queue, name, metrics
        self.children: dict[str, int] = {}  # job id -> pid of its process (also its process group)
        # one job process started ahead, its imports done, waiting for its job on stdin: a run does
        # not wait for an interpreter to start (measured by benchmarks/queue.py)
        self._spare: asyncio.subprocess.Process | None = None
        self._refill: asyncio.Task[None] | None = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(  # from the loop's thread: PR_SET_PDEATHSIG is tied to it
            sys.executable, "-m", "tonearm.app.tasks", self.cfg.ffmpeg.path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)

    def warm(self) -> None:
        """Start the first spare now, so that not even the first job waits for an interpreter."""
        if self._spare is None and self._refill is None:
            async def first() -> None:
                self._spare = await self._spawn()

            self._refill = asyncio.create_task(first())

    async def _take(self) -> asyncio.subprocess.Process:
        if self._refill is not None:
            await asyncio.gather(self._refill, return_exceptions=True)
        proc, self._spare = self._spare, None
        if proc is None or proc.returncode is not None:
            proc = await self._spawn()

        async def refill() -> None:
            self._spare = await self._spawn()

        self._refill = asyncio.create_task(refill())
        return proc

    async def run(self, job_id: str) -> None:
        action, job = await asyncio.to_thread(self.queue.start, job_id, self.name)
        if action == "busy":
            raise Retry(self.cfg.jobs.stalled_s, "another run of this job is still alive")
        if action != "run":
            if action == "poison":
                self.metrics.failed("poison")
            return
        t0 = time.monotonic()
        payload = json.dumps({"config": config_payload(self.cfg), "job": job}).encode()
        proc = await self._take()
        try:
            for fresh in (False, True):
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(payload)
                    await proc.stdin.drain()
                    proc.stdin.close()
                    break
                except (BrokenPipeError, ConnectionResetError):  # a spare that died idle: start one now
                    if fresh:
                        raise
                    await proc.wait()
                    proc = await self._spawn()
            self.children[job_id] = proc.pid
            result, cancelled = await self._follow(job_id, proc)
            rc = 0 if result is not None else await proc.wait()  # with an outcome, reaped after recording it
        except BaseException as exc:  # shutdown past --drain, or our own failure: kill the run, hand the job back
            _kill(proc.pid)
            await proc.wait()
            await asyncio.shield(asyncio.to_thread(self.queue.requeue, job_id, died=False, code="handed_back",
                                                   message="the worker stopped; the job went back to the queue"))
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            raise Retry(self._backoff(1), f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.children.pop(job_id, None)
        try:
            await self._outcome(job_id, job, result, cancelled, rc, time.monotonic() - t0)
        finally:
            if proc.returncode is None:  # it exits by itself after its last line; never left behind
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except asyncio.TimeoutError:
                    _kill(proc.pid)
                    await proc.wait()

    async def _follow(self, job_id: str, proc: asyncio.subprocess.Process) -> tuple[dict | None, bool]:
        """Relay the child's lines to the job row; kill it when the job is cancelled."""
        assert proc.stdout is not None
        result: dict | None = None
        state: JobState | None = None
        progress: dict[str, float] | None = None
        next_beat = 0.0
        while True:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), self.cfg.jobs.poll_s)
            except asyncio.TimeoutError:
                line = None
            if line == b"":
                return result, False
            if line:
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {}
                if "stage" in msg and msg["stage"] in STAGES:
                    state, next_beat = STAGES[msg["stage"]], 0.0
                elif "progress" in msg and isinstance(msg["progress"], dict):
                    progress = {str(k): float(v) for k, v in msg["progress"].items()}
                elif "result" in msg:
                    await asyncio.to_thread(self.queue.beat, job_id, state=state, progress=progress)
                    return msg["result"], False
                elif isinstance(msg.get("asset_id"), str):  # a bucket master, hashed once fetched
                    await asyncio.to_thread(self.queue.beat, job_id, asset_id=msg["asset_id"][:64])
            if time.monotonic() >= next_beat:
                cancel = await asyncio.to_thread(self.queue.beat, job_id, state=state, progress=progress)
                state, progress, next_beat = None, None, time.monotonic() + self.cfg.jobs.poll_s
                if cancel:
                    _kill(proc.pid)
                    await proc.wait()
                    return None, True

    async def _outcome(self, job_id: str, job: dict, result: dict | None, cancelled: bool, rc: int,
                       seconds: float) -> None:
        q, jobs_cfg = self.queue, self.cfg.jobs
        if cancelled:
            await asyncio.to_thread(q.finish, job_id, JobState.CANCELLED, "cancelled", "cancelled while running")
            self.metrics.done("cancelled", seconds)
            return
        if result is None:  # killed (OOM killer, a signal) or crashed before reporting: a death
            why = f"the job's process {'was killed by signal ' + str(-rc) if rc < 0 else 'exited with ' + str(rc)}"
            runs = await asyncio.to_thread(q.requeue, job_id, died=True, code="worker_crashed", message=why)
            self.metrics.failed("worker_crashed")
            raise Retry(self._backoff(runs), why)  # the next start counts the deaths and stops a poison job
        outcome, err = result.get("outcome"), result.get("error") or {}
        asset_id = result.get("asset_id")
        if outcome in ("published", "already_published"):
            data = {"already_published": outcome == "already_published", "seconds": result.get("seconds"),
                    "manifests": (result.get("info") or {}).get("manifests")}
            await asyncio.to_thread(q.finish, job_id, JobState.PUBLISHED, asset_id=asset_id, data=data)
            self.metrics.done("published", seconds)
        elif outcome == "quarantined":
            await asyncio.to_thread(q.finish, job_id, JobState.QUARANTINED, err.get("code"), err.get("message"),
                                    asset_id=asset_id)
            self.metrics.done("quarantined", seconds)
            self.metrics.failed(err.get("code") or "quarantined")
        else:
            code, message = err.get("code") or "internal_error", err.get("message") or "failed"
            self.metrics.failed(code)
            if code in TRANSIENT and job["attempt"] < jobs_cfg.retry_attempts:
                runs = await asyncio.to_thread(q.requeue, job_id, died=False, code=code, message=message)
                raise Retry(self._backoff(runs), f"{code}: {message}")
            await asyncio.to_thread(q.finish, job_id, JobState.FAILED, code, message, asset_id=asset_id)
            self.metrics.done("failed", seconds)

    def _backoff(self, runs: int) -> float:
        return min(self.cfg.jobs.retry_base_s * 2 ** max(0, runs - 1), 3600.0)

    def kill_all(self) -> None:
        for pid in list(self.children.values()) + ([self._spare.pid] if self._spare else []):
            _kill(pid)

    async def aclose(self) -> None:
        """Kill the running jobs' processes and the spare, and reap the spare."""
        if self._refill is not None:
            await asyncio.gather(self._refill, return_exceptions=True)
        self.kill_all()
        if self._spare is not None:
            await self._spare.wait()
            self._spare = None


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _sweep(app: procrastinate.App, queue: PgQueue, cfg: Config) -> None:
    """Put back in the queue the jobs of workers that stopped beating (and, as a backstop, job rows
    whose own heartbeat stopped while procrastinate still has them running)."""
    manager = app.job_manager
    while True:
        await asyncio.sleep(max(0.5, cfg.jobs.stalled_s / 4))
        try:
            ids = {job.id for job in await manager.get_stalled_jobs(seconds_since_heartbeat=cfg.jobs.stalled_s)
                   if job.task_name == TASK}
            ids |= set(await asyncio.to_thread(queue.stalled, cfg.jobs.stalled_s))
            for pq_id in ids:
                try:
                    await manager.retry_job_by_id_async(pq_id, retry_at=datetime.datetime.now(datetime.timezone.utc))
                    log.warning("job %s of a stalled worker went back to the queue", pq_id)
                except Exception as exc:  # another worker's sweep was first
                    log.debug("retry of stalled job %s: %s", pq_id, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server is away: next round
            log.warning("stalled-job sweep failed: %s", exc)


async def _main(cfg: Config, concurrency: int, drain_s: float, metrics_port: int | None) -> int:
    queue = PgQueue(cfg)
    name = f"{socket.gethostname()}:{os.getpid()}"
    metrics = Metrics(queue, port=metrics_port)
    runner = Runner(cfg, queue, name, metrics)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=cfg.catalog.url))

    @app.task(name=TASK, queue=QUEUE, pass_context=False, retry=_Obey())
    async def run_job(job_id: str) -> None:
        await runner.run(job_id)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app.open_async():
        runner.warm()
        sweeper = asyncio.create_task(_sweep(app, queue, cfg))
        try:
            while not stop.is_set():
                worker = asyncio.create_task(app.run_worker_async(
                    queues=[QUEUE], name=name, concurrency=concurrency, wait=True, install_signal_handlers=False,
                    update_heartbeat_interval=cfg.jobs.heartbeat_s, stalled_worker_timeout=cfg.jobs.stalled_s,
                    fetch_job_polling_interval=1.0, abort_job_polling_interval=1.0,
                    shutdown_graceful_timeout=drain_s))
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    worker.cancel()  # procrastinate: stop fetching, drain running jobs, then abort them
                    await asyncio.gather(worker, return_exceptions=True)
                    break
                stopping.cancel()
                exc = worker.exception()
                log.warning("worker loop ended (%s); reconnecting", exc)  # e.g. PostgreSQL restarted
                await asyncio.sleep(1.0)
        finally:
            await runner.aclose()
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            metrics.close()
            queue.close()
    return 0


def run_worker(cfg: Config, *, concurrency: int | None = None, drain_s: float = 30.0,
               metrics_port: int | None = None) -> int:
    if not cfg.catalog.is_postgres:
        from tonearm.core.config import ConfigError

        raise ConfigError("tonearm worker needs a shared catalog: set [catalog] url (TONEARM_CATALOG_URL) to "
                          "postgresql://...; with SQLite, tonearm ingest runs its jobs itself")
    return asyncio.run(_main(cfg, concurrency or cfg.jobs.concurrency, drain_s, metrics_port))
