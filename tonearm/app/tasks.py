"""One job's own process: ``python -m tonearm.app.tasks``, started by a worker for each run.

A job runs in a process of its own so that killing it (cancellation, a worker's shutdown, a worker
that died) kills everything it started: this process asks Linux to SIGKILL it when the worker's
thread that started it exits (``PR_SET_PDEATHSIG``, set by the worker), and every ffmpeg it starts
asks the same of it (``tonearm.core.ffmpeg``).  It also watches its parent pid as a second guard.

Protocol: one JSON object on stdin (``{"config": ..., "job": {"id", "kind", "source", "filename",
"asset_id", "attempt"}}``); JSON lines on stdout: ``{"stage": name}``, ``{"progress": {rendition:
0..1}}`` and last ``{"result": JobResult.to_json()}``.  Everything else the pipeline prints or logs
goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from tonearm.app.job_types import Tombstoned
from tonearm.app.pipeline import Context, JobResult, Outcome, process, repackage
from tonearm.core.config import Config, _dec_hook
from tonearm.core.errors import TonearmError
from tonearm.core.model import JobError

__all__ = ("main", "config_payload")


def config_payload(cfg: Config) -> dict[str, Any]:
    return msgspec.to_builtins(cfg, enc_hook=str)


def _emitter(fd: int) -> Callable[[dict[str, Any]], None]:
    out = os.fdopen(fd, "w", buffering=1)
    lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    return emit


def _watch_parent(parent: int) -> None:
    """Die if the worker is gone (the parent-death signal is the first line; this one is the second)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(137)


def _fetch(cfg: Config, source: str, filename: str, into: Path) -> Path:
    """A local path as it is; an s3://bucket/key object downloaded into ``into``."""
    if not source.startswith("s3://"):
        return Path(source)
    import boto3

    bucket, _, key = source[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=cfg.storage.s3_endpoint_url or None, region_name=cfg.storage.s3_region)
    name = Path(filename).name or "master.bin"
    target = into / (name if name not in (".", "..") else "master.bin")
    client.download_file(bucket, key, str(target))
    return target


def run(cfg: Config, job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> JobResult:
    ctx = Context.from_config(cfg)
    last = [0.0]
    known = {"asset_id": job.get("asset_id")}

    def progress(p: dict[str, float]) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or all(v >= 1.0 for v in p.values()):
            last[0] = now
            emit({"progress": {k: round(v, 4) for k, v in p.items()}})

    def stage(name: str) -> None:
        emit({"stage": name})
        # a takedown while the job ran: the last look before the asset goes public
        if name == "publishing" and job["kind"] == "ingest" and known["asset_id"] and \
                _tombstoned(ctx, known["asset_id"]):
            raise Tombstoned(f"asset {known['asset_id']} was taken down while this job built it; not publishing")

    ctx.on_stage = stage
    ctx.on_progress = progress
    if job["kind"] == "repackage":
        return repackage(ctx, job["asset_id"])
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=cfg.data_dir) as tmp:
        try:
            path = _fetch(cfg, job["source"], job["filename"], Path(tmp))
        except Exception as exc:  # the bucket or the network: transient, the worker retries
            err = JobError(code="storage_error", message=f"cannot fetch {job['source']}: {type(exc).__name__}: {exc}")
            return JobResult(source=job["source"], outcome=Outcome.FAILED, error=err)
        if job["source"].startswith("s3://"):  # not hashed at submit: hashed here, before any work
            from ingest import Rejected, content_id

            try:
                known["asset_id"] = content_id(path, max_bytes=cfg.ingest.max_bytes)
            except (Rejected, OSError):
                pass  # process() reports it
            if known["asset_id"]:
                emit({"asset_id": known["asset_id"]})
                if _tombstoned(ctx, known["asset_id"]):
                    err = JobError(code="asset_taken_down",
                                   message=f"asset {known['asset_id']} was taken down: submit with force to re-ingest")
                    return JobResult(source=str(path), outcome=Outcome.FAILED, asset_id=known["asset_id"], error=err)
        return process(ctx, path)


def _tombstoned(ctx: Context, asset_id: str) -> bool:
    """Whether these bytes were taken down (a forced submit removes the tombstone first)."""
    if ctx.cfg.catalog.is_postgres:
        return bool(ctx.catalog.run(lambda db: db.execute(  # type: ignore[attr-defined]
            "SELECT 1 FROM tonearm_tombstones WHERE asset_id=%s", (asset_id,)).fetchone()))
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(ctx.cfg.catalog_path, timeout=30)) as db:
        try:
            return bool(db.execute("SELECT 1 FROM tombstones WHERE asset_id=?", (asset_id,)).fetchone())
        except sqlite3.OperationalError:  # no tombstones table: nothing was ever taken down
            return False


def main() -> int:
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:  # while waiting for a job (a worker's spare): probe ffmpeg now, not in the job's time
        from tonearm.core.ffmpeg import locate

        locate(sys.argv[1] if len(sys.argv) > 1 else "")
    except TonearmError:
        pass  # the job reports it
    emit = _emitter(os.dup(1))
    os.dup2(2, 1)  # print() and friends go to stderr: stdout is the protocol
    sys.stdout = sys.stderr
    spec = json.loads(sys.stdin.read())
    cfg = msgspec.convert(spec["config"], Config, strict=False, dec_hook=_dec_hook)
    try:
        result = run(cfg, spec["job"], emit)
    except TonearmError as exc:  # the catalog or the storage failed under the job: reported, retried
        result = JobResult(source=spec["job"]["source"], outcome=Outcome.FAILED,
                           error=JobError(code=exc.code, message=str(exc)))
    emit({"result": result.to_json()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
