"""Per-master fixed costs: where one master's ingest spends its time besides the encoders.

A long catalog hides them; a single or an EP shows them.  Two measurements of a 2-minute master:

* wall-clock spans: the stage functions the pipeline calls are wrapped with a timer (the real
  functions run; nothing is replaced), one ``process()`` runs in a fresh process, and every
  span is reported with what is left over ("other");
* a cProfile of the same job (run once more, from an empty data directory), for the Python
  functions that cost the most time of their own.

Process start-up (the ``tonearm`` command, a batch worker's imports) is timed as a separate
child process, since that is what a user pays per ``tonearm ingest`` and per worker.
"""

from __future__ import annotations

import cProfile
import functools
import io
import json
import pstats
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.procs import run_timed

# (label, module, attribute): where the pipeline looks each stage up, so wrapping it there times the call.
SPANS: tuple[tuple[str, str, str], ...] = (
    ("hash + copy into storage", "tonearm.app.pipeline", "content_id"),
    ("locate ffmpeg (-version, -encoders)", "tonearm.app.pipeline", "locate"),
    ("header checks (sniff, probe, WAV chunks)", "tonearm.app.shared_pass", "check_header"),
    ("resampler probe (soxr)", "transcode.resampler", "has_soxr"),
    ("ffmpeg run: decode + measure + encode", "transcode.encode", "run"),
    ("judge decode log + read tags", "tonearm.app.shared_pass", "judge_log"),
    ("packaging (both layouts)", "tonearm.app.pipeline", "package"),
    ("manifests", "tonearm.app.pipeline", "write_manifests"),
)
# Methods of the context's catalog and storage objects, timed per call.
CATALOG_METHODS = ("claim", "set_state", "get")
STORAGE_METHODS = ("receive_master", "keep_master", "new_staging", "clean_stale_staging", "publish", "is_published")


def _timed(acc: dict[str, float], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0
    return wrapper


def spans_in_this_process(master: Path, data: Path) -> dict[str, Any]:
    """Run one ``process()`` with the stage functions timed; meant for a fresh child process."""
    import importlib

    t0 = time.perf_counter()
    from tonearm.app.pipeline import Context, process
    from tonearm.core.config import load
    imports_s = time.perf_counter() - t0

    acc: dict[str, float] = {}
    for label, module, attr in SPANS:
        mod = importlib.import_module(module)
        setattr(mod, attr, _timed(acc, label, getattr(mod, attr)))
    cfg = load(env={}, overrides={"storage": {"root": str(data)}})
    ctx = Context.from_config(cfg)
    for name in CATALOG_METHODS:
        setattr(ctx.catalog, name, _timed(acc, "catalog writes and reads", getattr(ctx.catalog, name)))
    for name in STORAGE_METHODS:
        setattr(ctx.storage, name, _timed(acc, "storage: receive, keep, staging, publish", getattr(ctx.storage, name)))
    t1 = time.perf_counter()
    result = process(ctx, master)
    total = time.perf_counter() - t1
    if not result.ok:
        raise RuntimeError(f"overhead run did not publish: {result.error}")
    # "hash + copy" and "catalog" overlap nothing; storage.receive_master happens inside process() too.
    return {"imports_s": imports_s, "job_s": total, "spans_s": acc}


def profile_in_this_process(master: Path, data: Path, top: int = 12) -> list[dict[str, Any]]:
    """The functions with the most time of their own in one job (waiting on ffmpeg left out)."""
    from tonearm.app.pipeline import Context, process
    from tonearm.core.config import load

    ctx = Context.from_config(load(env={}, overrides={"storage": {"root": str(data)}}))
    prof = cProfile.Profile()
    prof.enable()
    process(ctx, master)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, fn), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if fn in ("poll", "<method 'poll' of 'select.poll' objects>") or "poll" in fn:
            continue  # the wait on ffmpeg: the encoders' time, not Python's
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": ncalls, "own_s": tottime,
                     "cumulative_s": cumtime})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:top]


def measure(master: Path, work: Path, *, timeout: float = 1800.0) -> dict[str, Any]:
    """Everything above, each in its own fresh child process (cold imports, cold caches: what a user pays)."""
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"master": master.name}
    cli = run_timed([sys.executable, "-c", "import tonearm.app.cli"], timeout=timeout)
    worker = run_timed([sys.executable, "-c", "import tonearm.app.batch, av, ffmpeg"], timeout=timeout)
    out["startup"] = {"cli_import_wall_s": cli.wall_s, "cli_import_cpu_s": cli.cpu_s,
                      "worker_import_wall_s": worker.wall_s, "worker_import_cpu_s": worker.cpu_s}
    for kind in ("spans", "profile"):
        data = work / f"data-{kind}"
        shutil.rmtree(data, ignore_errors=True)
        t = run_timed([sys.executable, "-m", "benchmarks.overhead", kind, str(master), str(data)], timeout=timeout)
        out[kind] = json.loads(t.stdout.strip().splitlines()[-1])
        if kind == "spans":
            out["spans"]["child_cpu_s"] = t.cpu_s
        shutil.rmtree(data, ignore_errors=True)
    spans = out["spans"]["spans_s"]
    encoder = spans.get("ffmpeg run: decode + measure + encode", 0.0)
    fixed = out["spans"]["job_s"] - encoder
    out["fixed_s"] = fixed
    out["other_s"] = out["spans"]["job_s"] - sum(spans.values())
    return out


def main(argv: list[str]) -> int:
    kind, master, data = argv[0], Path(argv[1]), Path(argv[2])
    result: Any = spans_in_this_process(master, data) if kind == "spans" else profile_in_this_process(master, data)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
