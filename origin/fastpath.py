"""The origin's fast path: cached GET/HEAD answered from the connection itself, ahead of aiohttp.

On a hot release nearly every request is a GET for a segment whose bytes are
in memory, and aiohttp's request layer (per request a Request, a
StreamWriter and a task, the router, a response object) cost about three
times the answer itself: one worker served 0.31x nginx's segment rate (see
README "Benchmarks").  So every connection of ``tonearm serve`` starts here.

A request is answered here only when all of this holds; it is then sent the
same bytes aiohttp's path would send (``origin.respond.plan`` and
``serialise`` are shared, and ``tests/test_origin_fastpath.py`` compares the
two paths byte for byte):

* its head is complete and strict: ``GET`` or ``HEAD``, an origin-form target
  of plain path characters (no ``%``, no ``?``), HTTP/1.0 or 1.1, visible
  ASCII field lines with token names, each name once, under ``MAX_FIELDS``;
* it has no body and asks for nothing special: no Content-Length,
  Transfer-Encoding, Expect or Upgrade, and Connection is keep-alive or close;
* it is a media, init or manifest path the origin serves (``Origin.locate``:
  signatures are checked there), the file's bytes are cached (a miss is
  loaded through the source, as aiohttp's path would), and the answer is a
  200, a single-range 206 or a 304.

At the first request that is anything else the connection is handed to
aiohttp with that request's bytes exactly as the client sent them, and stays
there.  So every refusal, limit and error status (400, 403, 404, 405, 412,
416, 502, multipart ranges, streamed files, the API, health, metrics) is
aiohttp's and ``Origin.handle``'s, unchanged.  Connection limits are kept:
``header_timeout`` for a first request, ``keepalive_timeout`` after the last
response (also closing a half-sent later request), and reading stops while
the transport's buffer is over its high-water mark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any, Callable

from multidict import CIMultiDict

from origin.app import ROUTE_OF_KIND, Origin, Refusal
from origin.observe import METRICS
from origin.kept import read_resident, resident
from origin.representation import Entry, Kind, Region
from origin.respond import Planned, plan, serialise, text_plan
from origin.signing import redact
from origin.sources import Scope

__all__ = ("Connection", "MAX_HEAD", "MAX_FIELDS")

log = logging.getLogger("tonearm.origin")

MAX_HEAD = 8190  # a head longer than aiohttp's line limit goes to aiohttp, which applies its own limits
MAX_FIELDS = 64
MAX_PENDING = 64 * 1024  # bytes read ahead (pipelined requests) before reading pauses
REST_STEP = 256 * 1024  # of a body the socket did not take, the most copied into the transport at once

_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,1023}) HTTP/1\.([01])\r\n")
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*\r\n)+")
_HAND_OVER_FIELDS = frozenset({"content-length", "transfer-encoding", "expect", "upgrade"})


class Request:
    """A parsed head: what ``plan`` and the origin's helpers read (``headers`` is case-insensitive)."""

    __slots__ = ("method", "path", "version", "headers", "keep_alive", "size")

    def __init__(self, method: str, path: str, version: tuple[int, int], headers: CIMultiDict[str],
                 keep_alive: bool, size: int) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.size = size  # bytes of the head, request line to the empty line


def parse(buf: bytes, start: int, end: int) -> Request | None:
    """The head in ``buf[start:end + 4]`` (``end`` is where its CRLF CRLF starts), or None: not for us."""
    m = _REQUEST_LINE.match(buf, start)
    if m is None or m.end() > end + 2:
        return None
    block = buf[m.end():end + 2]
    pairs: list[tuple[str, str]] = []
    if block:
        if _FIELDS.fullmatch(block) is None:
            return None
        for line in block[:-2].split(b"\r\n"):
            name, _, value = line.partition(b":")
            pairs.append((name.decode("ascii"), value.strip(b" \t").decode("ascii")))
        if len(pairs) > MAX_FIELDS:
            return None
    names = {n.lower() for n, _ in pairs}
    if len(names) != len(pairs) or not names.isdisjoint(_HAND_OVER_FIELDS):
        return None
    headers = CIMultiDict(pairs)
    version = (1, 1) if m.group(3) == b"1" else (1, 0)
    connection = headers.get("Connection")
    if connection is None:
        keep_alive = version == (1, 1)
    else:
        connection = connection.lower()
        if connection not in ("keep-alive", "close"):
            return None
        keep_alive = connection == "keep-alive" or (version == (1, 1) and connection != "close")
    return Request(m.group(1).decode("ascii"), m.group(2).decode("ascii"), version, headers, keep_alive,
                   end + 4 - start)


class Connection(asyncio.Protocol):
    """One client connection: answered here until a request needs aiohttp, then aiohttp's for good."""

    def __init__(self, origin: Origin, factory: Callable[[], Any], acceptor: Any) -> None:
        """``acceptor``: the ``origin.server.Acceptor`` that counts connections (``_made``/``_lost``)."""
        self._origin = origin
        self._factory = factory  # makes aiohttp's RequestHandler, at the hand-over
        self._acceptor = acceptor
        self._loop = asyncio.get_running_loop()
        self.handler: Any = None  # aiohttp's protocol once handed over
        self.transport: Any = None
        self.made = False
        self._buf = b""
        self._busy = False  # a request waits on storage; later ones wait in _buf
        self._paused = False  # the transport's buffer is over its high-water mark
        self._reading_paused = False
        self._started = False  # a first complete head arrived (header_timeout no longer applies)
        self._closing = False  # shutting down or told to close: answer nothing more
        self._idle_since = 0.0
        self._deadline = 0.0  # header_timeout's end for the first request
        self._timer: asyncio.TimerHandle | None = None
        self._remote: str | None = None
        self._fd = -1  # the socket's descriptor, for sendfile (-1: every body goes through the transport)
        self._drained: asyncio.Future[None] | None = None  # a body's rest waits here for resume_writing

    # -- transport callbacks ---------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.made = True
        self.transport = transport
        now = self._loop.time()
        self._idle_since = now
        acc = self._acceptor
        if acc.header_timeout > 0:
            self._deadline = now + acc.header_timeout
            self._timer = self._loop.call_at(self._deadline, self._tick)
        elif self._origin.cfg.origin.keepalive_timeout > 0:
            self._timer = self._loop.call_at(now + self._origin.cfg.origin.keepalive_timeout, self._tick)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
        if self._origin.access.enabled:
            peer = transport.get_extra_info("peername")
            self._remote = peer[0] if isinstance(peer, tuple) else None
        acc._made(self)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            return
        self._buf = self._buf + data if self._buf else data
        if self._busy or self._paused:
            if len(self._buf) > MAX_PENDING and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return self.handler.eof_received()
        return None  # the transport closes once our writes are out

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()
        if self.handler is not None:
            self.handler.resume_writing()
            return
        self._resume()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self.handler is not None:
                self.handler.connection_lost(exc)
        finally:
            self._acceptor._lost(self)

    # -- requests --------------------------------------------------------------------------------------------

    def _process(self) -> None:
        """Answer every complete head in the buffer that is ours; stop at a wait, a hand-over or backpressure."""
        buf = self._buf
        pos = 0
        try:
            while not self._closing and not self._paused:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        self._buf = buf[pos:]
                        pos = 0
                        self._hand_over()
                        return
                    break
                self._started = True
                req = parse(buf, pos, end)
                if req is None:
                    self._buf = buf[pos:]
                    pos = 0
                    self._hand_over()
                    return
                outcome = self._serve(req)
                if outcome is _SERVED:
                    pos = end + 4
                    continue
                self._buf = buf[pos:]  # this request's bytes stay first until it is answered or handed over
                pos = 0
                if outcome is _HAND_OVER:
                    self._hand_over()
                return
        except Exception:  # a defect here must not leave the client hanging: log it and close
            log.exception("fast path failed; closing the connection")
            self._closing = True
            self.transport.close()
            return
        if pos:
            self._buf = buf[pos:]

    def _serve(self, req: Request) -> object:
        """_SERVED, _HAND_OVER, or _WAITING (a miss: ``_load`` answers when the source has the file)."""
        t0 = time.perf_counter()
        origin = self._origin
        located = origin.locate(req.path)
        if isinstance(located, Refusal):
            return _HAND_OVER
        scope, rel, kind = located
        entry = origin.source.peek(scope, rel, kind, self._loop.time(), sendable=self._fd >= 0)
        outcome = _MISS if entry is None else self._answer(req, entry, kind, t0)
        if outcome is _MISS:
            self._busy = True
            self._loop.create_task(self._load(req, scope, rel, kind, t0))
            return _WAITING
        return outcome

    def _answer(self, req: Request, entry: Entry, kind: Kind, t0: float) -> object:
        """_SERVED, _HAND_OVER, _WAITING, or _MISS: a kept file's bytes to send are not all in the page cache."""
        extra, rid = self._origin.response_fields(req.headers)
        planned = plan(req.method, req.headers, entry, extra)
        if planned is None:
            return _HAND_OVER
        payload = planned.payload
        if isinstance(payload, Region) and req.method != "HEAD" and not resident(payload):
            return _MISS  # the executor reads it, as any miss (sendfile would wait for the disk on the loop)
        return self._send(req, planned, ROUTE_OF_KIND[kind], rid, t0)

    def _send(self, req: Request, planned: Planned, route: str, rid: str, t0: float) -> object:
        transport = self.transport
        head = serialise(planned, req.version, req.keep_alive)
        payload = planned.payload
        rest: object = None  # of a Region body: what is left to send (a Region), or _GONE
        if req.method == "HEAD" or payload is None:
            transport.write(head)
            nbytes = 0
        else:
            if isinstance(payload, Region):
                rest = self._send_region(head, payload)
            else:
                transport.writelines((head, payload))
            nbytes = planned.length or 0
        if not req.keep_alive:
            self._closing = True
            if rest is None:
                transport.close()  # after the buffered response is written
        if rest is _GONE:
            self._record(req, 499, 0, route, rid, t0, "ConnectionResetError")
        elif isinstance(rest, Region):  # logged once the rest is out, or the client gone (_send_rest)
            self._busy = True
            self._loop.create_task(self._send_rest(req, os.dup(rest.fd), rest.start, rest.length,
                                                   (planned.status, nbytes, route, rid, t0)))
            return _WAITING
        else:
            self._record(req, planned.status, nbytes, route, rid, t0)
        return _SERVED

    def _record(self, req: Request, status: int, nbytes: int, route: str, rid: str, t0: float,
                error: str | None = None) -> None:
        """Metrics and the access line of one response, as ``Origin.handle`` records them (499: client gone)."""
        self._idle_since = self._loop.time()
        elapsed = time.perf_counter() - t0
        METRICS.observe(route, status, nbytes, elapsed)
        METRICS.fast_served += 1
        if status == 499:
            METRICS.disconnects.labels(route).inc()
        access = self._origin.access
        if access.enabled:
            path = redact(req.path) if req.path.startswith("/s/") else req.path
            access.record(req.method, path, rid, status, nbytes, elapsed, route, self._remote,
                          req.headers.get("Range"), error)

    def _send_region(self, head: bytes, region: Region) -> Region | object | None:
        """``head``, then the region by sendfile from the page cache; what the socket does not take now goes
        through the transport, read without blocking.  None when all is sent or queued; the rest to send in
        steps (long, or its pages gone from the page cache meanwhile); _GONE when the client went away."""
        transport = self.transport
        written = sent = 0
        if not transport.get_write_buffer_size():  # nothing queued ahead of us: write the socket directly
            try:
                written = os.write(self._fd, head)
                if written == len(head):
                    sent = os.sendfile(self._fd, region.fd, region.start, region.length)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # the client went away: the transport sees it too
                self._closing = True
                transport.abort()
                return _GONE
        if written < len(head):
            transport.write(head[written:])
        if sent:
            METRICS.fast_sendfile += 1
        if sent == region.length:
            return None
        rest = region.part(sent, region.length)
        if rest.length <= REST_STEP:
            data = read_resident(rest.fd, rest.start, rest.length)
            if data is not None:
                transport.write(data)
                return None
        # A long rest (a single file) or pages gone from the page cache: sent in steps, so a slow
        # reader holds REST_STEP plus the transport's high-water mark here, not the file.
        return rest

    async def _send_rest(self, req: Request, fd: int, start: int, length: int,
                         record: tuple[int, int, str, str, float]) -> None:
        """The rest of a region, REST_STEP at a time: each read without blocking where resident (else by the
        executor), each written once the transport is under its high-water mark.  ``record``: the
        response's (status, bytes, route, request id, start time), logged once it is out."""
        transport = self.transport
        pos, end = start, start + length
        status, nbytes, route, rid, t0 = record
        failed: str | None = None
        try:
            while pos < end and not transport.is_closing():
                n = min(REST_STEP, end - pos)
                chunk = read_resident(fd, pos, n)
                if chunk is None:
                    chunk = await self._loop.run_in_executor(None, os.pread, fd, n, pos)
                if transport.is_closing():
                    break
                if len(chunk) != n:  # cannot happen to a published file; never send a short body
                    raise OSError("file shrank while being sent")
                transport.write(chunk)
                pos += n
                while self._paused and not transport.is_closing():
                    self._drained = self._loop.create_future()
                    await self._drained
        except OSError as exc:
            failed = f"aborted mid-body: {type(exc).__name__}: {exc}"
            log.error("%s %s: %s", req.method, redact(req.path), failed)
            self._closing = True
            transport.abort()
        finally:
            os.close(fd)
            self._busy = False
            if failed is None and pos < end:  # the client went away mid-body: not our error
                self._record(req, 499, 0, route, rid, t0, "ConnectionResetError")
            else:
                self._record(req, status, nbytes, route, rid, t0, failed)
        if transport.is_closing():
            return
        self._buf = self._buf[req.size:]
        if self._closing:
            transport.close()
            return
        self._resume()

    def _wake(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def _load(self, req: Request, scope: Scope, rel: str, kind: Kind, t0: float) -> None:
        """A miss: load through the source as aiohttp's path would, then answer (200/206/304/404/502)."""
        METRICS.active += 1
        failed: Exception | None = None
        found = None
        try:
            found = await self._origin.source.resolve(scope, rel, kind)
        except Exception as exc:  # noqa: BLE001 - storage failing: answered 502 below, as aiohttp's path would
            failed = exc
        finally:
            METRICS.active -= 1
        self._busy = False
        transport = self.transport
        if transport.is_closing():  # the client went away meanwhile
            if found is not None and found[1] is not None:
                found[1].close()
            return
        route = ROUTE_OF_KIND[kind]
        if failed is not None or found is None:
            extra, rid = self._origin.response_fields(req.headers)
            planned = self._origin.storage_failed(req.method, req.path, failed, extra) if failed is not None \
                else text_plan(404, "not found\n", extra)
            outcome = self._send(req, planned, route, rid, t0)
        elif found[1] is not None:
            found[1].close()  # a streamed body: aiohttp's path opens it again
            outcome = _HAND_OVER
        else:
            outcome = self._answer(req, found[0], kind, t0)
        if outcome is not _SERVED:
            self._hand_over()
            return
        self._buf = self._buf[req.size:]
        if self._closing:  # shutdown came while this request waited
            transport.close()
            return
        self._resume()

    def _resume(self) -> None:
        if self._busy:  # a request is still being answered (_load, _send_rest): it resumes when done
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._closing:
            return
        if self._buf:
            self._process()

    def _hand_over(self) -> None:
        """Give the connection, with the bytes not yet answered, to aiohttp for the rest of its life."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        handler = self._factory()
        self.handler = handler
        handler.connection_made(self.transport)
        if not self._started and self._deadline:  # headers still arriving: header_timeout still applies
            self._origin.first_request_timers[handler] = self._loop.call_at(self._deadline, handler.force_close)
        if self._paused:
            handler.pause_writing()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        data, self._buf = self._buf, b""
        if data:
            handler.data_received(data)

    # -- timeouts and shutdown -------------------------------------------------------------------------------

    def _tick(self) -> None:
        """header_timeout for the first request, then keepalive_timeout after the last response."""
        self._timer = None
        if self.handler is not None or self.transport is None or self._closing:
            return
        now = self._loop.time()
        if not self._started:
            self.transport.close()
            return
        keepalive = self._origin.cfg.origin.keepalive_timeout
        if keepalive <= 0:
            return
        if self._busy or self.transport.get_write_buffer_size():
            self._timer = self._loop.call_at(now + keepalive, self._tick)  # a response is still on its way
            return
        if now - self._idle_since >= keepalive:
            self._closing = True
            self.transport.close()
            return
        self._timer = self._loop.call_at(self._idle_since + keepalive, self._tick)

    def shutdown(self) -> None:
        """Stop answering; close once the response in progress (if any) has been handed to the transport."""
        if self.handler is not None or self._closing:
            return
        self._closing = True
        if not self._busy and self.transport is not None:
            self.transport.close()


_SERVED = object()
_HAND_OVER = object()
_WAITING = object()
_MISS = object()
_GONE = object()  # the client went away while the response was being written
