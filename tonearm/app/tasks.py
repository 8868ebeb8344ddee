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

    def progress(p: dict[str, float]) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or all(v >= 1.0 for v in p.values()):
            last[0] = now
            emit({"progress": {k: round(v, 4) for k, v in p.items()}})

    ctx.on_stage = lambda name: emit({"stage": name})
    ctx.on_progress = progress
    if job["kind"] == "repackage":
        return repackage(ctx, job["asset_id"])
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=cfg.data_dir) as tmp:
        try:
            path = _fetch(cfg, job["source"], job["filename"], Path(tmp))
        except Exception as exc:  # the bucket or the network: transient, the worker retries
            err = JobError(code="storage_error", message=f"cannot fetch {job['source']}: {type(exc).__name__}: {exc}")
            return JobResult(source=job["source"], outcome=Outcome.FAILED, error=err)
        return process(ctx, path)


def main() -> int:
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
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
