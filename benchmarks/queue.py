"""The job queue's cost: the same masters through the direct batch and through the queue, same catalog.

    python -m benchmarks.queue [--masters 4] [--seconds 90] [--workers 2] [--rounds 1]

Both runs use a PostgreSQL catalog on a throwaway cluster (tests/fixtures_pg.py), a fresh database
and data dir each, and the same master files:

- batch: ``process_many(cfg, paths, jobs=W)`` (what ``tonearm ingest -j W`` runs), wall time from the
  first master to the last result;
- queue: W ``tonearm worker --concurrency 1`` processes, already started and registered (workers are
  long-lived: their start is not a per-job cost), then every master submitted and waited for
  (``JobQueue.submit`` + ``wait``): wall time from the first submit to the last job published.

Overhead = queue / batch - 1 (target: at most 3 % of wall time); ``overhead_cold`` also counts the
workers' start-up, as the batch's wall time counts its pool's; ``overhead_cpu`` compares the CPU
seconds of every process each run started (robust on a shared machine, where wall time is not; the
queue's include the workers' own start and their last, unused spare job process; PostgreSQL's own
CPU is in neither).  ``added_s``: per job, its run's wall time minus the pipeline's own (what the
worker, the job process and the catalog writes add around it).  Also reported: submit latency per
job and pickup latency (submit to the job's first stage).  Results: ``benchmarks/results/queue.json``.
With ``--rounds`` > 1 the runs alternate (batch, queue, batch, ...) and medians are reported, since
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fixtures_pg import remove_cluster, start_cluster
from tonearm.app.batch import process_many
from tonearm.app.jobs import JobState, open_queue
from tonearm.core.config import Config, load

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = 0.03


def write_masters(folder: Path, n: int, seconds: float) -> list[Path]:
    """Music-like enough to cost a real encode: a chord over pink noise, distinct per master."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"bench-{i:02d}.flac"
        f = 220 + 37 * i
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"anoisesrc=d={seconds}:c=pink:r=44100:a=0.05:seed={i + 1}", "-f", "lavfi", "-i",
                        f"aevalsrc=0.2*sin(2*PI*{f}*t)+0.1*sin(2*PI*{f * 1.5}*t)|0.2*sin(2*PI*{f * 1.25}*t):s=44100:"
                        f"d={seconds}", "-filter_complex", "[0][1]amix=inputs=2:duration=shortest,pan=stereo|c0=c0|c1=c1",
                        "-c:a", "flac", "-sample_fmt", "s16", str(path)], check=True, timeout=600)
        out.append(path)
    return out


def config(data: Path, url: str) -> tuple[Config, dict[str, str]]:
    env = {"TONEARM_DATA": str(data), "TONEARM_CATALOG_URL": url}
    return load(None, env=env), env


def _cpu() -> float:
    """CPU seconds of this process and of every descendant reaped so far (pool workers, job
    processes, ffmpeg): what a run cost, whatever else the machine was doing."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_batch(cfg: Config, masters: list[Path], workers: int) -> dict[str, Any]:
    c0 = _cpu()
    t0 = time.monotonic()
    results = list(process_many(cfg, masters, jobs=workers))
    wall = time.monotonic() - t0
    cpu = _cpu() - c0
    bad = [r for r in results if r.outcome.value != "published"]
    assert not bad, [(r.source, r.error) for r in bad]
    return {"wall_s": wall, "cpu_s": cpu, "per_job_s": [r.seconds for r in results]}


def run_queue(cfg: Config, env: dict[str, str], masters: list[Path], workers: int, logs: Path) -> dict[str, Any]:
    queue = open_queue(cfg)
    procs = []
    c0 = _cpu()
    cold0 = time.monotonic()
    try:
        for i in range(workers):
            log = open(logs / f"worker{i}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", "worker", "--concurrency", "1"],
                                          env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        deadline = time.monotonic() + 120
        while queue.stats()["workers"] < workers:  # registered with procrastinate: ready to fetch
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)
        t0 = time.monotonic()
        submits, jobs = [], []
        for m in masters:
            s0 = time.monotonic()
            jobs.append(queue.submit(str(m), origin="cli"))
            submits.append(time.monotonic() - s0)
        done = queue.wait([j.id for j in jobs], timeout=7200)
        wall = time.monotonic() - t0
        assert all(j.state is JobState.PUBLISHED for j in done), [(j.state, j.error_code) for j in done]
        rows = queue.db.run(lambda db: db.execute(  # type: ignore[attr-defined]
            "SELECT j.started_at - j.created_at, j.finished_at - j.started_at, (e.data->>'seconds')::float"
            " FROM tonearm_jobs j JOIN tonearm_events e ON e.job_id = j.id AND e.type = 'published'").fetchall())
        result = {"wall_s": wall, "added_s": [r[1] - r[2] for r in rows], "pipeline_s": [r[2] for r in rows],
                  "cold_wall_s": time.monotonic() - cold0, "submit_ms": [1000 * s for s in submits],
                  "pickup_s": sorted(r[0] for r in rows), "run_s": [r[1] for r in rows]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        queue.close()
    result["cpu_s"] = _cpu() - c0  # the workers and their job processes, reaped by now
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tonearm-bench-queue-"))
    cluster = start_cluster(work / "pg")
    try:
        masters = write_masters(work / "masters", args.masters, args.seconds)
        batches, queues = [], []
        for r in range(args.rounds):
            cfg, _ = config(work / f"batch{r}", cluster.new_database())
            batches.append(run_batch(cfg, masters, args.workers))
            print(f"queue bench: round {r + 1} batch {batches[-1]['wall_s']:.1f} s", flush=True)
            cfg, env = config(work / f"queue{r}", cluster.new_database())
            (work / f"logs{r}").mkdir()
            queues.append(run_queue(cfg, env, masters, args.workers, work / f"logs{r}"))
            print(f"queue bench: round {r + 1} queue {queues[-1]['wall_s']:.1f} s", flush=True)
    finally:
        remove_cluster(cluster)
    batch_s = statistics.median(b["wall_s"] for b in batches)
    queue_s = statistics.median(q["wall_s"] for q in queues)
    overhead = queue_s / batch_s - 1
    cold_s = statistics.median(q["cold_wall_s"] for q in queues)
    cpu_b = statistics.median(b["cpu_s"] for b in batches)
    cpu_q = statistics.median(q["cpu_s"] for q in queues)
    result = {
        "masters": args.masters, "seconds_each": args.seconds, "workers": args.workers, "rounds": args.rounds,
        "batch_wall_s": round(batch_s, 2), "queue_wall_s": round(queue_s, 2), "overhead": round(overhead, 4),
        "batch_cpu_s": round(cpu_b, 2), "queue_cpu_s": round(cpu_q, 2), "overhead_cpu": round(cpu_q / cpu_b - 1, 4),
        "queue_cold_wall_s": round(cold_s, 2), "overhead_cold": round(cold_s / batch_s - 1, 4),
        "batch_rounds_s": [round(b["wall_s"], 2) for b in batches], "queue_rounds_s": [round(q["wall_s"], 2) for q in queues],
        "target": TARGET, "pass": overhead <= TARGET,
        "submit_ms_median": round(statistics.median(x for q in queues for x in q["submit_ms"]), 2),
        "pickup_s_first": round(min(x for q in queues for x in q["pickup_s"]), 3),
        "run_s_median": round(statistics.median(x for q in queues for x in q["run_s"]), 2),
        "batch_job_s_median": round(statistics.median(x for b in batches for x in b["per_job_s"]), 2),
        # what the queue adds to each job, measured beside the job itself (robust on a shared machine):
        # its run's wall time (process start, stage reports, outcome) minus the pipeline's own time
        "added_s_median": round(statistics.median(x for q in queues for x in q["added_s"]), 3),
        "added_fraction": round(sum(x for q in queues for x in q["added_s"])
                                / sum(x for q in queues for x in q["pipeline_s"]), 4),
        "load_average": os.getloadavg(),
    }
    out = HERE / "results" / "queue.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"queue bench: {args.masters} x {args.seconds:.0f} s masters, {args.workers} workers: batch "
          f"{batch_s:.1f} s, queue {queue_s:.1f} s, overhead {100 * overhead:+.1f} % (target <= {100 * TARGET:.0f} %: "
          f"{'pass' if result['pass'] else 'MISS'}; {100 * result['overhead_cold']:+.1f} % counting the workers' start); submit {result['submit_ms_median']} ms, first pickup "
          f"{result['pickup_s_first']} s; per job {result['run_s_median']} s queued vs "
          f"{result['batch_job_s_median']} s batch; the queue adds {result['added_s_median']} s per job "
          f"({100 * result['added_fraction']:.1f} % of the jobs' own time); CPU: batch {cpu_b:.1f} s, queue {cpu_q:.1f} s "
          f"({100 * result['overhead_cpu']:+.1f} %) -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
