"""Running child processes with their exact CPU cost.

``os.wait4`` returns the resource usage of the one child it reaps, including
every descendant that child reaped in turn (an ffmpeg under a worker under
``tonearm ingest``), so CPU time is measured per run, not sampled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Timed:
    argv: tuple[str, ...]
    wall_s: float
    cpu_s: float  # user + system of the child and its reaped descendants
    returncode: int
    stdout: str
    stderr: str


class ChildFailed(RuntimeError):
    pass


def run_timed(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
              check: bool = True) -> Timed:
    """Run ``argv`` to completion; kill its process group after ``timeout`` seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, env=dict(env) if env is not None else None)
        timer = threading.Timer(timeout, _killpg, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _killpg(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Timed(tuple(argv), wall, usage.ru_utime + usage.ru_stime, proc.returncode,
                       out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    if check and result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ChildFailed(f"{os.path.basename(argv[0])} exited with {result.returncode}: {tail}")
    return result


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
