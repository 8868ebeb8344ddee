"""``tonearm serve``: N worker processes on one port, graceful shutdown.

Each worker binds the same address with ``SO_REUSEPORT`` and the kernel
spreads connections over them; one process per core is how a Python server
uses more than one core.  On SIGTERM (or SIGINT) a worker stops accepting,
lets in-flight requests finish (up to ``SHUTDOWN_S``), then exits; the parent
forwards the signal and waits.  From the signal on, ``/readyz`` answers 503
(draining), and with ``[origin] drain_s`` the worker keeps accepting that long
first, so a load balancer's health check moves new requests elsewhere before
this one stops listening.  uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from aiohttp import web

from origin.app import ORIGIN, make_app
from origin.fastpath import Connection
from origin.observe import BadRequestFilter
from tonearm.core.config import Config

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

    ocfg = cfg.origin
    app = make_app(cfg)
    # keepalive_timeout: aiohttp closes a connection idle that long after its last response (and, armed at
    # connection_made, one that never completes a request); header_timeout is the Acceptor's, below.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S,
                           keepalive_timeout=ocfg.keepalive_timeout)
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    origin = app[ORIGIN]
    acceptor = Acceptor(loop, _listen(ocfg.host, ocfg.port, reuse_port), runner.server,
                        max_connections=ocfg.max_connections, header_timeout=ocfg.header_timeout,
                        first_request_timers=origin.first_request_timers,
                        fast=origin if ocfg.fast_path else None)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.release()  # tell the parent this worker listens
    else:
        print(f"tonearm origin: serving {cfg.storage.backend} storage on http://{cfg.origin.host}:{cfg.origin.port}"
              f" ({cfg.origin.workers} worker(s), {loop_name})", file=sys.stderr, flush=True)
    await stop.wait()
    origin.draining = True  # /readyz answers 503 from now until the process exits
    if ocfg.drain_s > 0:  # keep serving until the load balancer's checks have seen it and moved new requests away
        await asyncio.sleep(ocfg.drain_s)
    # aiohttp forgets its connections during cleanup: note their transports first (private map, read only).
    transports = list(runner.server._connections.values()) if runner.server else []
    transports += [c.transport for c in acceptor.connections if c.handler is None]
    acceptor.close()  # stop listening; idle fast-path connections close, busy ones once answered
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


# accept() errors that mean "out of a resource" (descriptors, kernel memory): the pending connection stays
# queued and the listening socket readable, so retrying at once would spin the loop at 100% CPU.
BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Errors that concern one pending connection only (reset before it was accepted): take the next one.
SKIP_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
EPISODE_QUIET_S = 10.0  # failures closer together than this are one episode: one log line, not one per flap


class _Tracked:
    """The protocol the transport talks to with ``[origin] fast_path = false``: aiohttp's handler, plus
    the Acceptor's header timer and a note to it when the connection closes.

    Only the connection's birth and death go through this object: the data
    path (data_received and flow control) is the handler's own bound
    methods, copied onto the instance, so a request costs no extra call.
    """

    __slots__ = ("handler", "_acceptor", "made", "transport", "data_received", "eof_received", "pause_writing",
                 "resume_writing")

    def __init__(self, handler: Any, acceptor: "Acceptor") -> None:
        self.handler = handler
        self._acceptor = acceptor
        self.made = False
        self.transport: Any = None
        self.data_received = handler.data_received
        self.eof_received = handler.eof_received
        self.pause_writing = handler.pause_writing
        self.resume_writing = handler.resume_writing

    def connection_made(self, transport: Any) -> None:
        self.made = True
        self.transport = transport
        self.handler.connection_made(transport)
        acc = self._acceptor
        if acc.header_timeout > 0:
            acc.first_request_timers[self.handler] = acc._loop.call_later(acc.header_timeout, self.handler.force_close)
        acc._made(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            self.handler.connection_lost(exc)
        finally:
            self._acceptor._lost(self)


class Acceptor:
    """Accepts every pending connection at each wake-up and hands it to aiohttp's server.

    uvloop's own listener (libuv) accepts one connection per loop iteration; under
    load one iteration serves hundreds of requests, so 512 connections opened at
    once took seconds to be accepted, and their first requests waited that long
    (a p99 of seconds at 512 connections, which nginx answers in tens of ms).

    It also bounds what connections can cost:

    * ``max_connections`` open at once: at the cap it stops reading the listening
      sockets (the kernel's backlog holds the next ones) and resumes when one closes.
    * ``header_timeout``: a connection that has not started its first request by
      then (silent, or headers half sent) is closed.  The timer is disarmed by the
      handler (``Origin.handle`` pops ``first_request_timers[request.protocol]``), or
      by the fast path once a head is complete; later requests on the connection
      are bounded by keepalive_timeout.
    * with ``fast`` (an ``Origin``), each connection starts on ``origin.fastpath``,
      which hands it to aiohttp's server at its first request it does not answer.
    * out of descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): it
      stops reading the listening sockets and retries after 50 ms, doubling up to
      1 s, with one log line when the episode starts and one when it ends.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket], factory: Any, *,
                 max_connections: int = 4096, header_timeout: float = 60.0,
                 first_request_timers: dict[Any, asyncio.TimerHandle] | None = None, fast: Any = None) -> None:
        self._loop = loop
        self._fast = fast
        self.connections: set[Any] = set()  # made and not yet lost: _Tracked or fastpath.Connection
        self._socks = socks
        self._factory = factory
        self._tasks: set[asyncio.Task[Any]] = set()
        self.max_connections = max(1, max_connections)
        self.header_timeout = header_timeout
        self.first_request_timers: dict[Any, asyncio.TimerHandle] = \
            {} if first_request_timers is None else first_request_timers
        self.open = 0  # connections accepted and not yet closed
        self._reading = False
        self._backoff: asyncio.TimerHandle | None = None
        self._delay = BACKOFF_FIRST_S
        self._episode: tuple[float, int, float] | None = None  # (started, failed attempts, last failure)
        self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        if on == self._reading or not self._socks:
            return
        for sock in self._socks:
            if on:
                self._loop.add_reader(sock.fileno(), self._accept, sock)
            else:
                self._loop.remove_reader(sock.fileno())
        self._reading = on

    def _may_read(self) -> bool:
        return self._backoff is None and self.open < self.max_connections

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.open >= self.max_connections:
                self._set_reading(False)  # at the cap: the backlog holds the rest until one closes
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in SKIP_ERRNOS:
                    log.debug("accept: %s (that connection is gone; taking the next)", exc)
                    continue
                self._back_off(exc)
                return
            if self._episode is not None:
                started, attempts, last = self._episode
                if self._loop.time() - last >= EPISODE_QUIET_S:
                    log.warning("accept failures are over: %d failed attempts in %.1f s", attempts, last - started)
                    self._episode = None
            self._delay = BACKOFF_FIRST_S
            conn.setblocking(False)
            self.open += 1
            tracked: Any = Connection(self._fast, self._factory, self) if self._fast is not None \
                else _Tracked(self._factory(), self)
            task = self._loop.create_task(self._loop.connect_accepted_socket(lambda t=tracked: t, conn))
            self._tasks.add(task)
            task.add_done_callback(lambda t, tracked=tracked, conn=conn: self._setup_done(t, tracked, conn))

    def _back_off(self, exc: OSError) -> None:
        """Stop reading the listening sockets for a while: the error will not clear by retrying at once."""
        now = self._loop.time()
        if self._episode is None:
            self._episode = (now, 1, now)
            log.warning("accept failed: %s; pausing accepts, retrying after %.2f s, then up to every %.0f s, "
                        "until it clears", exc, self._delay, BACKOFF_MAX_S)
        else:
            started, attempts, _ = self._episode
            self._episode = (started, attempts + 1, now)
        self._set_reading(False)
        self._backoff = self._loop.call_later(self._delay, self._retry)
        self._delay = min(BACKOFF_MAX_S, self._delay * 2)

    def _retry(self) -> None:
        self._backoff = None
        if self._may_read():
            self._set_reading(True)

    def _made(self, conn: Any) -> None:
        self.connections.add(conn)

    def _lost(self, conn: Any) -> None:
        timer = self.first_request_timers.pop(conn.handler, None) if conn.handler is not None else None
        if timer is not None:
            timer.cancel()
        self.connections.discard(conn)
        self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        if not self._reading and self._may_read():
            self._set_reading(True)

    def _setup_done(self, task: asyncio.Task[Any], tracked: Any, conn: socket.socket) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            if exc is not None:
                log.debug("connection setup failed: %s", exc)
            if not tracked.made:  # never reached the handler: nobody else will close it or count it
                conn.close()
                self._closed_one()

    def close(self) -> None:
        """Stop listening, and tell fast-path connections to close (aiohttp's own are its runner's)."""
        self._set_reading(False)
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        for sock in self._socks:
            sock.close()
        self._socks = []
        for conn in list(self.connections):
            if isinstance(conn, Connection):
                conn.shutdown()


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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
BODY_MMAP_THRESHOLD = 64 * 1024


def _mmap_large_allocations() -> None:
    """Cached bodies (tens to hundreds of KB, replaced as the cache turns over) get their own mappings.

    glibc raises its mmap threshold each time a mapped block is freed, so after
    a while such bodies come from the heap, whose holes it rarely returns: the
    origin's RSS grew 58% over 100,000 requests on a catalog larger than the
    cache (benchmarks' memory figure).  A fixed threshold keeps every body in a
    mapping that ``free`` unmaps, and RSS stays flat.  Not glibc: nothing to do.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.mallopt(M_MMAP_THRESHOLD, BODY_MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


GIL_SWITCH_S = 0.0005


def _short_gil_hand_offs() -> None:
    """The loop thread gives the GIL to a waiting executor thread after 0.5 ms, not Python's 5 ms.

    File loads and the gate refresher run in executor threads, and each of
    their syscalls gives the GIL up and takes it back; with the loop thread
    busy, every take waited up to the 5 ms switch interval, so a load took tens
    of milliseconds and its request landed in the p99 (the fast path's p99 at
    64 connections went from 24-41 ms to 12 ms with this, one run each, same
    machine).  Costs nothing while no other thread wants the GIL.
    """
    sys.setswitchinterval(GIL_SWITCH_S)


def _exit_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)  # stopped before it listened: nothing in flight to drain


def _run_worker(cfg: Config, reuse_port: bool, ready: Any = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(BadRequestFilter())
    signal.signal(signal.SIGTERM, _exit_quietly)  # until the loop's own handler takes over
    _raise_fd_limit()
    _mmap_large_allocations()
    _short_gil_hand_offs()
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
