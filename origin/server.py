"""``tonearm serve``: N worker processes on one port, graceful shutdown.

Each worker binds the same address with ``SO_REUSEPORT`` and the kernel
spreads connections over them; one process per core is how a Python server
uses more than one core.  On SIGTERM (or SIGINT) a worker stops accepting,
lets in-flight requests finish (up to ``SHUTDOWN_S``), then exits; the parent
forwards the signal and waits.  uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from tonearm.config import Config

__all__ = ("serve",)

log = logging.getLogger("tonearm.origin")
SHUTDOWN_S = 30.0


def _event_loop_policy() -> str:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:
        return "asyncio"


async def _worker_main(cfg: Config, reuse_port: bool, loop_name: str, ready: Any = None) -> None:
    from aiohttp import web

    from origin.app import make_app

    app = make_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    acceptor = Acceptor(loop, _listen(cfg.origin.host, cfg.origin.port, reuse_port), runner.server)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.release()  # tell the parent this worker listens
    else:
        print(f"tonearm origin: serving {cfg.storage.backend} storage on http://{cfg.origin.host}:{cfg.origin.port}"
              f" ({cfg.origin.workers} worker(s), {loop_name})", file=sys.stderr, flush=True)
    await stop.wait()
    # aiohttp forgets its connections during cleanup: note their transports first (private map, read only).
    transports = list(runner.server._connections.values()) if runner.server else []
    acceptor.close()  # stop listening
    await runner.cleanup()  # then wait for in-flight requests up to SHUTDOWN_S
    await _flush(transports, loop.time() + SHUTDOWN_S)


BACKLOG = 2048
ACCEPT_BATCH = 512


def _listen(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as ``loop.create_server`` would bind."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class Acceptor:
    """Accepts every pending connection at each wake-up and hands it to aiohttp's server.

    uvloop's own listener (libuv) accepts one connection per loop iteration; under
    load one iteration serves hundreds of requests, so 512 connections opened at
    once took seconds to be accepted, and their first requests waited that long
    (a p99 of seconds at 512 connections, which nginx answers in tens of ms).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket], factory: Any) -> None:
        self._loop = loop
        self._socks = socks
        self._factory = factory
        self._tasks: set[asyncio.Task[Any]] = set()
        for sock in socks:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS, ECONNABORTED: try again at the next wake-up
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("connection setup failed: %s", task.exception())

    def close(self) -> None:
        for sock in self._socks:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks = []


async def _flush(transports: Any, deadline: float) -> None:
    """Wait until the last responses have left the transports' buffers.

    A response can be complete for aiohttp while its tail still sits in the
    transport's write buffer; closing the loop then would drop it.
    """
    pending = [t for t in list(transports) if t is not None]
    loop = asyncio.get_running_loop()
    while any(t.get_write_buffer_size() for t in pending) and loop.time() < deadline:
        await asyncio.sleep(0.02)


def _raise_fd_limit() -> None:
    """Every connection and open file is a descriptor; the usual soft limit of 1024 is too low for a server."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _exit_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)  # stopped before it listened: nothing in flight to drain


def _run_worker(cfg: Config, reuse_port: bool, ready: Any = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s[%(process)d]: %(message)s")
    signal.signal(signal.SIGTERM, _exit_quietly)  # until the loop's own handler takes over
    _raise_fd_limit()
    loop_name = _event_loop_policy()
    if reuse_port:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    asyncio.run(_worker_main(cfg, reuse_port, loop_name, ready))


def serve(cfg: Config) -> int:
    """Run the origin until SIGTERM/SIGINT; returns the exit code."""
    workers = max(1, cfg.origin.workers)
    if workers == 1:
        try:
            _run_worker(cfg, False)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"tonearm serve: cannot listen on {cfg.origin.host}:{cfg.origin.port}: {exc}", file=sys.stderr)
            return 1
        return 0
    if cfg.origin.port == 0:
        print("tonearm serve: --workers > 1 needs a fixed --port", file=sys.stderr)
        return 2
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="tonearm-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir  # set before any worker imports prometheus_client
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Semaphore(0)
    procs = [ctx.Process(target=_run_worker, args=(cfg, True, ready), name=f"tonearm-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    listening = 0
    try:
        while any(p.is_alive() for p in procs):
            while listening < workers and ready.acquire(timeout=0):
                listening += 1
                if listening == workers:
                    print(f"tonearm origin: serving {cfg.storage.backend} storage on http://{cfg.origin.host}:"
                          f"{cfg.origin.port} ({workers} workers)", file=sys.stderr, flush=True)
            for p in procs:
                p.join(0.2)
                if p.exitcode not in (None, 0):  # a worker died: stop the rest rather than serve degraded
                    code = 1
                    forward(signal.SIGTERM, None)
    finally:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            for p in procs:
                if p.pid:
                    multiprocess.mark_process_dead(p.pid)
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return code
