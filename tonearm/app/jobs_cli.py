"""``tonearm worker``, ``tonearm jobs [--json] [--state S]``, ``jobs cancel ID``, ``jobs watch``, and
``tonearm ingest`` with a PostgreSQL catalog (enqueue only; ``--wait`` follows the jobs to their end).

Exit codes as everywhere: 0 all published, 1 some job was quarantined, failed or cancelled (or is
still running when ``--wait`` gives up), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tonearm.app.jobs import PRIORITY_RANGE, TERMINAL, Job, JobNotFound, JobState, Tombstoned, open_queue
from tonearm.core.config import Config, ConfigError

__all__ = ("add_command", "ingest_queued")


def _line(job: Job) -> str:
    err = f"  {job.error_code}: {job.error_message}" if job.error_code else ""
    prog = ""
    if job.progress and job.state is JobState.TRANSCODING:
        prog = f" {100 * min(job.progress.values()):.0f}%"
    return (f"{job.id}  {job.state.value:<12}{prog:>5} p={job.priority:<4} {job.origin:<6} {(job.asset_id or '-')[:16]:<16}"
            f"  {job.filename}{err}")


def ingest_queued(cfg: Config, args: argparse.Namespace, paths: list[Path], rejected: list[Any] = ()) -> int:
    """``tonearm ingest`` with a shared catalog: submit each master; with ``--wait``, follow them.
    ``rejected``: the JobResults of inputs refused before reading (printed as the batch prints them)."""
    queue = open_queue(cfg)
    jobs: list[Job] = []
    failures = len(rejected)
    for result in rejected:
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
        else:
            print(f"{result.outcome.value}: {result.source}: {result.error.code}: {result.error.message}",
                  file=sys.stderr, flush=True)
    for path in paths:
        try:
            job = queue.submit(str(path), filename=path.name, priority=getattr(args, "priority", 0) or 0,
                               origin="cli", force=getattr(args, "force", False))
        except Tombstoned as exc:
            print(f"refused: {path}: {exc.code}: {exc}", file=sys.stderr, flush=True)
            failures += 1
            continue
        jobs.append(job)
        if args.json:
            print(json.dumps({"event": "queued", **job.to_json()}), flush=True)
        else:
            print(f"queued: {path} -> job {job.id}", flush=True)
    if not getattr(args, "wait", False):
        queue.close()
        return 1 if failures else 0
    done = queue.wait([j.id for j in jobs], timeout=getattr(args, "timeout", None))
    for job in done:
        ok = job.state is JobState.PUBLISHED
        failures += not ok
        if args.json:
            print(json.dumps({"event": "finished", **job.to_json()}), flush=True)
        elif ok:
            print(f"published: {job.filename} -> {job.asset_id}", flush=True)
        else:
            why = f"{job.error_code}: {job.error_message}" if job.error_code else "still running"
            print(f"{job.state.value}: {job.filename}: {why}", file=sys.stderr, flush=True)
    queue.close()
    return 1 if failures else 0


def cmd_jobs(cfg: Config, args: argparse.Namespace) -> int:
    queue = open_queue(cfg)
    state = JobState(args.state) if args.state else None
    for job in queue.list(state=state, limit=args.limit):
        print(json.dumps(job.to_json()) if args.json else _line(job), flush=True)
    return 0


def cmd_cancel(cfg: Config, args: argparse.Namespace) -> int:
    queue = open_queue(cfg)
    try:
        job = queue.cancel(args.id)
    except JobNotFound as exc:
        print(f"tonearm: {exc.code}: {args.id}", file=sys.stderr)
        return 1
    if job.state not in TERMINAL:  # a running job: its worker kills it within [jobs] poll_s
        job = queue.wait([job.id], timeout=args.timeout)[0]
    print(json.dumps(job.to_json()) if args.json else _line(job))
    return 0 if job.state is JobState.CANCELLED else 1


def cmd_watch(cfg: Config, args: argparse.Namespace) -> int:
    """Live bars, one per job not yet finished, refreshed every ``--interval`` seconds."""
    from tqdm import tqdm

    queue = open_queue(cfg)
    bars: dict[str, Any] = {}
    try:
        while True:
            live = [j for j in queue.list(limit=args.limit) if j.state not in TERMINAL]
            for job in live:
                bar = bars.get(job.id)
                if bar is None:
                    bar = bars[job.id] = tqdm(total=100, desc=job.filename[:30], unit="%", file=sys.stderr,
                                              bar_format="{desc:<30} {percentage:3.0f}%|{bar}| {postfix}",
                                              disable=not args.force_bars and not sys.stderr.isatty())
                pct = 100 * min(job.progress.values()) if job.progress else 0.0
                if job.state in (JobState.PACKAGING, JobState.PUBLISHING):
                    pct = 100.0
                bar.n = pct
                bar.set_postfix_str(job.state.value, refresh=True)
            for job_id in [i for i in bars if i not in {j.id for j in live}]:
                finished = queue.get(job_id)
                bar = bars.pop(job_id)
                bar.set_postfix_str(finished.state.value if finished else "gone", refresh=True)
                bar.close()
                if not sys.stderr.isatty() and finished:
                    print(_line(finished), flush=True)
            if args.until_idle and not live:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        for bar in bars.values():
            bar.close()


def cmd_worker(cfg: Config, args: argparse.Namespace) -> int:
    from tonearm.app.worker import run_worker

    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency: must be at least 1, got {args.concurrency}")
    return run_worker(cfg, concurrency=args.concurrency, drain_s=args.drain, metrics_port=args.metrics_port)


def add_command(sub: Any, config: Callable[..., Config]) -> None:
    """Register ``tonearm worker`` and ``tonearm jobs ...`` (``config(args)`` builds the Config)."""
    s = sub.add_parser("worker", help="run queued jobs from the shared catalog until SIGTERM")
    s.add_argument("--concurrency", "-c", type=int, default=None, help="jobs at once (default: [jobs] concurrency)")
    s.add_argument("--drain", type=float, default=30.0,
                   help="seconds running jobs may take to finish after SIGTERM before they are handed back")
    s.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on 127.0.0.1:PORT")
    s.set_defaults(func=lambda a: cmd_worker(config(a), a))

    s = sub.add_parser("jobs", help="list, cancel and watch jobs")
    s.add_argument("--json", action="store_true", help="one JSON record per job")
    s.add_argument("--state", choices=[st.value for st in JobState])
    s.add_argument("--limit", type=int, default=100)
    s.set_defaults(func=lambda a: cmd_jobs(config(a), a))
    jobs = s.add_subparsers(dest="jobs_command")
    c = jobs.add_parser("cancel", help="cancel a job (a running one's ffmpeg is killed within seconds)")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a running job to stop")
    c.set_defaults(func=lambda a: cmd_cancel(config(a), a))
    w = jobs.add_parser("watch", help="live progress bars of the jobs not finished yet")
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--limit", type=int, default=50)
    w.add_argument("--until-idle", action="store_true", help="exit when no job is left to run")
    w.add_argument("--force-bars", action="store_true", help="draw bars even when stderr is not a terminal")
    w.set_defaults(func=lambda a: cmd_watch(config(a), a))


def add_ingest_flags(p: argparse.ArgumentParser) -> None:
    """``tonearm ingest`` flags that matter with a shared catalog (queued jobs)."""
    lo, hi = PRIORITY_RANGE
    p.add_argument("--wait", action="store_true", help="with a PostgreSQL catalog: follow the jobs to their end")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    p.add_argument("--priority", type=int, default=0, help=f"higher runs first ({lo}..{hi}; new releases: 10)")
    p.add_argument("--force", action="store_true", help="re-ingest bytes that were taken down")
