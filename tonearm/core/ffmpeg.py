"""Locating and running ffmpeg.

ffmpeg is always an argv list (never a shell string), the binary is probed
once, the exact command is logged, stderr is captured and a non-zero exit or a
timeout becomes a typed error.  Both the blocking and the asyncio runners kill
the whole process on timeout or cancellation so no encoder outlives its job.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import functools
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from tonearm.core.codecs import needed_encoders
from tonearm.core.errors import TonearmError

log = logging.getLogger("tonearm.core.ffmpeg")

# The only protocol an open of a master may use: a demuxer must never reach another file's URL.
MASTER_PROTOCOLS = "file"


def master_input(demuxer: str, path: "os.PathLike[str] | str") -> list[str]:
    """ffmpeg input arguments for a master: its demuxer forced (never probed), ``file:`` only.

    ``demuxer`` is what ingest decided from the file's magic bytes (``ingest.formats``); a forced
    demuxer cannot turn into the HLS or concat demuxer that would open other files.
    """
    return ["-protocol_whitelist", MASTER_PROTOCOLS, "-f", demuxer, "-i", "file:" + os.path.abspath(path)]


def master_open_options() -> dict[str, str]:
    """The same rule for ``av.open(path, format=demuxer, options=...)``."""
    return {"protocol_whitelist": MASTER_PROTOCOLS}


class FfmpegError(TonearmError):
    """ffmpeg could not be found or a run failed; ``details`` carries the end of its stderr."""

    code = "ffmpeg_failed"

    def __init__(self, message: str, *, argv: Sequence[str] = (), stderr: str = "", returncode: int | None = None):
        super().__init__(message)
        self.argv = list(argv)
        self.stderr = stderr
        self.returncode = returncode

        if stderr:
            self.details["stderr_tail"] = self.tail()

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


class FfmpegNotFound(FfmpegError):
    code = "ffmpeg_not_found"


class FfmpegTimeout(FfmpegError):
    code = "ffmpeg_timeout"


@dataclass(frozen=True)
class FfmpegInfo:
    path: str
    source: str  # "config" | "TONEARM_FFMPEG" | "system" | "imageio-ffmpeg"
    version: str
    encoders: frozenset[str]

    @property
    def missing_encoders(self) -> list[str]:
        return [e for e in needed_encoders() if e not in self.encoders]


def _candidates(configured: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if configured:
        out.append((configured, "config"))
    if os.environ.get("TONEARM_FFMPEG"):
        out.append((os.environ["TONEARM_FFMPEG"], "TONEARM_FFMPEG"))
    system = shutil.which("ffmpeg")
    if system:
        out.append((system, "system"))
    try:
        import imageio_ffmpeg

        out.append((imageio_ffmpeg.get_ffmpeg_exe(), "imageio-ffmpeg"))
    except Exception:  # the wheel may lack a binary for this platform
        pass
    return out


@functools.lru_cache(maxsize=8)
def locate(configured: str = "") -> FfmpegInfo:
    """Find ffmpeg: config, then TONEARM_FFMPEG, then the system's, then imageio-ffmpeg's."""
    tried = []
    for path, source in _candidates(configured):
        resolved = shutil.which(path) or path
        if not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
            tried.append(f"{path} ({source}): not an executable file")
            continue
        try:
            # One run, not two (a per-process start-up cost): the banner on stderr says the version.
            listed = subprocess.run([resolved, "-encoders"], capture_output=True, text=True, timeout=30)
            version, encoders = listed.stderr, listed.stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{path} ({source}): {exc}")
            continue
        first = version.splitlines()[0] if version else "unknown"
        m = re.match(r"ffmpeg version (\S+)", first)
        names = frozenset(
            parts[1] for line in encoders.splitlines() if len(parts := line.split()) >= 2 and len(parts[0]) == 6
        )
        return FfmpegInfo(path=resolved, source=source, version=m.group(1) if m else first, encoders=names)
    raise FfmpegNotFound(
        "no usable ffmpeg: install one (apt-get install ffmpeg), set TONEARM_FFMPEG, "
        "or pip install imageio-ffmpeg. Tried: " + "; ".join(tried or ["nothing found"])
    )


_progress: contextvars.ContextVar[Callable[[float], None] | None] = contextvars.ContextVar("ffmpeg_progress",
                                                                                          default=None)


@contextmanager
def progress_to(callback: Callable[[float], None] | None) -> Iterator[None]:
    """While inside, each ``run`` of ffmpeg reports the seconds of output written (``-progress``)
    to ``callback`` (from a reader thread); ``None`` changes nothing."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def _progress_reader(fd: int, callback: Callable[[float], None]) -> threading.Thread:
    def read() -> None:
        with open(fd, "rb", buffering=0, closefd=True) as pipe:
            for line in iter(pipe.readline, b""):
                key, _, value = line.strip().partition(b"=")
                if key == b"out_time_us" and value.isdigit():
                    try:
                        callback(int(value) / 1e6)
                    except Exception:  # an observer's failure never stops the encode
                        log.debug("progress callback failed", exc_info=True)

    thread = threading.Thread(target=read, name="ffmpeg-progress", daemon=True)
    thread.start()
    return thread


def run(argv: Sequence[str], *, timeout: float, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg-family argv to completion, killing it on timeout."""
    log.info("run: %s", shlex.join(argv))
    callback, reader, pass_fds = _progress.get(), None, ()
    if callback is not None and os.path.basename(argv[0]).startswith("ffmpeg"):
        read_fd, write_fd = os.pipe()
        argv, pass_fds = [argv[0], "-progress", f"pipe:{write_fd}", *argv[1:]], (write_fd,)
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        pass_fds=pass_fds,
    )
    if pass_fds:
        os.close(write_fd)
        reader = _progress_reader(read_fd, callback)  # type: ignore[arg-type]
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc.pid)
        out, err = proc.communicate()
        raise FfmpegTimeout(
            f"{os.path.basename(argv[0])} did not finish within {timeout:.0f} s",
            argv=argv, stderr=err.decode(errors="replace"),
        ) from None
    except BaseException:  # KeyboardInterrupt and friends: never leave an orphan encoder
        _kill(proc.pid)
        proc.wait()
        raise
    if reader is not None:
        reader.join(5)
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise FfmpegError(
            f"{os.path.basename(argv[0])} exited with {proc.returncode}: {last}",
            argv=argv, stderr=stderr, returncode=proc.returncode,
        )
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, stderr.encode())


async def run_async(argv: Sequence[str], *, timeout: float) -> tuple[bytes, str]:
    """Run an argv without blocking the loop; killed on timeout and on cancellation."""
    log.info("run: %s", shlex.join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        raise FfmpegTimeout(f"{os.path.basename(argv[0])} did not finish within {timeout:.0f} s", argv=argv) from None
    except asyncio.CancelledError:
        _kill(proc.pid)
        await proc.wait()
        raise
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        raise FfmpegError(
            f"{os.path.basename(argv[0])} exited with {proc.returncode}", argv=argv, stderr=stderr,
            returncode=proc.returncode,
        )
    return out, stderr


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL us if the worker that started us dies (even by SIGKILL).

    The child runs in its own session so a timeout can kill its whole group; that also means a
    killed worker's terminal signal no longer reaches it, and it would go on encoding into a
    staging directory nobody will publish.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the timeout still bounds the run
        pass


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


die_with_parent = _die_with_parent  # for other long-lived children of a worker (tonearm.app.worker's job processes)
