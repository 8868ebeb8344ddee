"""Drop-to-published latency: a 4-minute master through a drop folder, a real PostgreSQL and one worker.

    python -m benchmarks.latency [--seconds 240] [--settle 2] [--runs 1]

Starts a throwaway PostgreSQL (tonearm/app/pgcluster.py, as ``make service`` does), one ``tonearm worker``
and one ``tonearm watch`` on a drop folder, with the default ladder.  The master appears in the folder
at once (written as ``.part``, then renamed: what a well-behaved upload tool does), and the clock
starts at the rename.  From the job's row (``tonearm_jobs``) the latency splits into:

* settle + hash: rename -> job created (the watcher waits ``settle_s`` of stillness, then hashes the file
  to submit it; the rescan tick adds up to a quarter of settle_s);
* queue wait: created -> a worker started it (procrastinate's LISTEN/NOTIFY wake-up, the job process start);
* processing: started -> published (validate, loudness, encode the ladder, package, publish).

Results go to ``benchmarks/results/latency.json`` and one line per run on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def make_master(path: Path, seconds: float) -> Path:
    """Music-like stereo 44.1 kHz 16-bit FLAC: pink noise under two tones, louder halfway."""
    from tonearm.core.ffmpeg import locate

    s = seconds
    graph = (f"[0]volume='if(lt(t,{s / 2}),0.05,0.4)':eval=frame,pan=stereo|c0=c0|c1=c0[n];"
             "[n][1]amix=inputs=2:duration=shortest,volume=2[out]")
    subprocess.run([locate().path, "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"anoisesrc=d={s}:c=pink:r=44100:a=0.5:seed=11",
                    "-f", "lavfi", "-i", f"aevalsrc=0.25*sin(2*PI*440*t)|0.25*sin(2*PI*554*t):s=44100:d={s}",
                    "-filter_complex", graph, "-map", "[out]", "-c:a", "flac", "-sample_fmt", "s16", str(path)],
                   check=True, timeout=600)
    return path


def spawn(argv: list[str], toml: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    env["TONEARM_CONFIG"] = str(toml)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tonearm.app.cli", *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    import signal

    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def one_run(db_url: str, drop: Path, master: Path, n: int, timeout: float = 1800) -> dict[str, float]:
    import psycopg

    part = drop / f".incoming-{n}.part"
    shutil.copyfile(master, part)
    final = drop / f"master-{n}{master.suffix}"
    os.rename(part, final)
    t0 = time.time()
    with psycopg.connect(db_url, autocommit=True) as db:
        while time.time() - t0 < timeout:
            row = db.execute("SELECT state, created_at, started_at, finished_at FROM tonearm_jobs WHERE filename = %s",
                             (final.name,)).fetchone()
            if row and row[0] in ("published", "quarantined", "failed", "cancelled"):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"no outcome after {timeout} s")
    state, created, started, finished = row
    if state != "published":
        raise RuntimeError(f"the job ended {state}")
    return {"total_s": round(finished - t0, 3), "settle_and_hash_s": round(created - t0, 3),
            "queue_wait_s": round(started - created, 3), "processing_s": round(finished - started, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240.0, help="master length (default: 4 minutes)")
    p.add_argument("--settle", type=float, default=2.0, help="[watch] settle_s")
    p.add_argument("--runs", type=int, default=1, help="masters dropped one after another (distinct bytes each)")
    p.add_argument("--work", default=str(HERE / "work" / "latency"))
    args = p.parse_args(argv)
    import psycopg

    from tonearm.app import pgcluster

    if (why := pgcluster.pg_available()) is not None:
        print(f"benchmarks.latency: skipped: {why}")
        return 0
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "drop").mkdir(parents=True)
    os.chmod(work, 0o755)
    cluster = pgcluster.start_cluster(work / "pg" / "cluster")
    procs: list[subprocess.Popen] = []
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as db:
            db.execute("CREATE DATABASE tonearm")
        url = cluster.url("tonearm")
        toml = work / "tonearm.toml"
        toml.write_text(f'[storage]\nroot = "{work / "data"}"\n[catalog]\nurl = "{url}"\n'
                        f'[watch]\nsettle_s = {args.settle}\nrescan_s = 30\n')
        procs.append(spawn(["worker"], toml, work / "worker.log"))
        procs.append(spawn(["watch", str(work / "drop")], toml, work / "watch.log"))
        time.sleep(3.0)  # the worker has registered and is listening; the watcher did its first pass
        results = []
        for n in range(args.runs):
            master = make_master(work / f"src-{n}.flac", args.seconds + n * 0.5)
            t = time.monotonic()
            import hashlib

            with open(master, "rb") as f:
                hashlib.file_digest(f, "sha256")
            hash_s = time.monotonic() - t
            r = {"master_s": args.seconds + n * 0.5, "master_bytes": master.stat().st_size, "settle_s": args.settle,
                 "hash_alone_s": round(hash_s, 3), **one_run(url, work / "drop", master, n)}
            results.append(r)
            print(f"drop-to-published {r['total_s']:.2f} s for a {r['master_s']:.0f} s master: settle + hash "
                  f"{r['settle_and_hash_s']:.2f} s (settle_s {args.settle}), queue wait {r['queue_wait_s']:.2f} s, "
                  f"processing {r['processing_s']:.2f} s", flush=True)
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "latency.json").write_text(json.dumps({"runs": results, "cores": os.cpu_count()}, indent=1) + "\n")
        return 0
    finally:
        stop(procs)
        pgcluster.remove_cluster(cluster)


if __name__ == "__main__":
    sys.exit(main())
