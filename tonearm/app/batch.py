"""Ingest many masters across worker processes.

Debian's ffmpeg 5.1 runs all rungs of one encoder process on one core
(performance-calibration notes), so one master at a time leaves the other
cores idle.  Running whole masters in parallel, one ``process()`` per worker
process, keeps every core busy; the last ``jobs`` jobs to start (and a lone master) split their ladder
across two ffmpeg runs (``encoders_per_job``), so the end of a batch does not leave a core idle
either.  Each worker builds its own ``Context``: the
SQLite catalog and the storage are safe across processes (the catalog lease
decides who encodes shared bytes), but connections must not cross a fork.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Iterable, Iterator

from tonearm.app.pipeline import Context, JobResult, Outcome, process
from tonearm.core.catalog_errors import CatalogError
from tonearm.core.config import Config
from tonearm.core.model import JobError

_worker_ctx: Context | None = None


def default_jobs() -> int:
    """One worker per core: a master's encode keeps one core busy."""
    return os.cpu_count() or 1


def _init_worker(cfg: Config) -> None:
    global _worker_ctx
    _worker_ctx = Context.from_config(cfg)


def _run_one(path: Path, encoders: int = 1) -> JobResult:
    assert _worker_ctx is not None, "worker was not initialised"
    return process(_worker_ctx, path, encoders=encoders)


def encoders_per_job(count: int, jobs: int) -> list[int]:
    """How many ffmpeg runs each of ``count`` jobs (in start order) splits its ladder across.

    Whole masters in parallel keep every core busy while at least ``jobs`` are queued.  The last
    ``jobs`` to start would leave cores idle as they finish one by one (each ends on its own
    core, and longest-first order does not make them end together), and a lone master would
    leave all but one idle, so those split their ladder in two (``transcode.split``): no core
    idles while work is queued, at the cost of one more decode and resample for those masters
    only.  Measured on the small catalog (4 masters, 2 cores): splitting the last one only,
    30.1-30.7 s; the last two, 28.1-28.6 s (README "Benchmarks").
    """
    if jobs < 2:
        return [1] * count
    return [2 if i >= count - jobs else 1 for i in range(count)]


def process_many(cfg: Config, paths: Iterable[Path], *, jobs: int) -> Iterator[JobResult]:
    """Yield one ``JobResult`` per path, in completion order, using up to ``jobs`` processes.

    Masters are started longest first by their header's duration x channels
    (longest-processing-time-first scheduling: the short ones fill the gaps
    at the end, so no core waits on one long master).  With ``jobs == 1``
    or a single path everything runs in this process (no
    pool start-up cost, tracebacks stay simple).  Workers are started with
    ``spawn`` so no SQLite handle or thread state is inherited; on an
    interrupt the queued jobs are cancelled and running encoders are killed by
    ``tonearm.core.ffmpeg.run`` in each worker.
    """
    paths = list(paths)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(paths) <= 1:
        ctx = Context.from_config(cfg)
        for path, encoders in zip(paths, encoders_per_job(len(paths), jobs)):
            yield process(ctx, path, encoders=encoders)
        return
    paths.sort(key=_work_estimate, reverse=True)  # longest first: no core idles at the end on one long master
    split = encoders_per_job(len(paths), jobs)
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(paths)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(cfg,),
    )
    try:
        sources: dict[Future[JobResult], Path] = {pool.submit(_run_one, p, n): p for p, n in zip(paths, split)}
        pending = set(sources)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield _result(fut, sources[fut])
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _work_estimate(path: Path) -> float:
    """Seconds x channels from the header (encode cost grows with both); 0 when unreadable.

    Only an ordering hint: ``process()`` validates every file properly.
    """
    try:
        import mutagen

        info = mutagen.File(path).info
        return float(info.length) * max(1, int(getattr(info, "channels", 2) or 2))
    except Exception:  # any unreadable or unknown file: process() reports it
        return 0.0


def _result(fut: Future[JobResult], path: Path) -> JobResult:
    """A worker that died (OOM kill, segfault) fails its job with a reason instead of the batch."""
    try:
        return fut.result()
    except CatalogError:
        raise  # the shared catalog is unusable: one line from the CLI, not a crash per file
    except Exception as exc:
        err = JobError(code="worker_crashed", message=f"{type(exc).__name__}: {exc}")
        return JobResult(source=str(path), outcome=Outcome.FAILED, error=err)
