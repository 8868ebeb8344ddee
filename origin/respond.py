"""Turning an ``Entry`` and a request into a response: the one place outcomes become statuses.

Bodies come from the cached bytes (a slice for ranges) or from a ``Body``
(sendfile or object-store ranges); multiple ranges become
``multipart/byteranges`` (RFC 9110 14.6) laid out like nginx's.

A cached body (the common case: a hot segment) goes out as ``CachedResponse``:
the entry's header lines are serialised once per file version, and the
response is one ``transport.writelines`` of header bytes + body.  Building a
``web.Response`` (a header multidict, its serialisation, and on Python < 3.12.9
a copy of the whole body joined to the headers) cost more CPU than the rest
of the request together.
"""

from __future__ import annotations

import functools
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Mapping

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from origin.conditional import Outcome, evaluate
from origin.representation import Entry, Region, Variant
from origin.sources import Body

__all__ = ("respond", "plan", "serialise", "Planned", "text_plan", "accepts_gzip", "Aborted", "BOUNDARY")


class Aborted(Exception):
    """A streamed body failed after its headers went out (client gone, or storage failed).

    The only honest answer then is to cut the connection, never a second status line; the
    handler does that, and tells a client disconnect (``__cause__`` is a ConnectionError)
    from a storage failure.
    """

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(f"response {response.status} aborted mid-body")
        self.response = response
        self.route = "other"

BOUNDARY = secrets.token_hex(10)  # per process; random so it never occurs in segment bytes by design
# RFC 9110 15.4.5: a 304 carries the validators and caching fields a 200 would have, not the body's metadata.
_NOT_MODIFIED_DROP = ("Content-Type", "Content-Encoding", "Accept-Ranges")


@functools.lru_cache(maxsize=128)
def accepts_gzip(accept_encoding: str) -> bool:
    """RFC 9110 12.5.3: gzip (or x-gzip, or *) listed with a non-zero qvalue."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _part_head(ctype: str, start: int, end: int, size: int) -> bytes:
    return (f"\r\n--{BOUNDARY}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
            ).encode()


_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n"
_date_at = -1
_date_line = ""


def _date() -> str:
    """The Date field line (RFC 9110 6.6.1), formatted once per second as aiohttp does."""
    global _date_at, _date_line
    now = int(time.time())
    if now != _date_at:
        _date_at, _date_line = now, f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date_line


@dataclass(slots=True)
class Planned:
    """A response made of precomputed header text and cached bytes (or none): what the hot paths send.

    ``head`` holds the field lines of the entry, ``extra`` and Content-Range;
    ``length`` is the Content-Length (None for a 304, which has neither body
    nor Content-Length, as aiohttp sends it).
    """

    status: int
    reason: str
    head: str
    payload: Any
    length: int | None


def plan(method: str, hdrs: Mapping[str, str], entry: Entry, extra: dict[str, str]) -> Planned | None:
    """The 200, single-range 206 or 304 for ``entry`` from its cached bytes; None when it needs more.

    None means a streamed body, several ranges, 412 or 416: ``respond`` builds
    those with aiohttp's own response classes.  Pure: the origin's fast path
    (``origin.fastpath``) decides with it before anything is sent or counted.
    """
    return _plan(_decide(method, hdrs, entry), extra)


Decision = tuple[Variant, Outcome, "list[tuple[int, int]] | None"]


def _decide(method: str, hdrs: Mapping[str, str], entry: Entry) -> Decision:
    """The representation (ranges address the identity bytes; gzip only for whole bodies) and the outcome."""
    variant = entry.identity
    if entry.gzip is not None and "Range" not in hdrs and accepts_gzip(hdrs.get("Accept-Encoding", "")):
        variant = entry.gzip
    outcome, ranges = evaluate(method, hdrs, etag=variant.etag, mtime=entry.mtime, length=variant.size)
    return variant, outcome, ranges


def _plan(decision: Decision, extra: dict[str, str]) -> Planned | None:
    variant, outcome, ranges = decision
    data = variant.body
    if outcome is Outcome.SEND:
        if data:  # (an empty body keeps web.Response, which leaves Content-Length out of a HEAD for it)
            return Planned(200, "OK", _head(variant, extra), data, variant.size)
        return None
    if outcome is Outcome.PARTIAL:
        assert ranges
        if data is None or len(ranges) != 1:
            return None
        start, end = ranges[0]
        crange = f"bytes {start}-{end - 1}/{variant.size}"  # RFC 9110 14.4
        return Planned(206, "Partial Content", f"{_head(variant, extra)}Content-Range: {crange}\r\n",
                       data.part(start, end) if isinstance(data, Region) else memoryview(data)[start:end],
                       end - start)
    if outcome is Outcome.NOT_MODIFIED:
        headers = {k: v for k, v in variant.headers.items() if k not in _NOT_MODIFIED_DROP}
        return Planned(304, "Not Modified", _lines(_merged(headers, extra)), None, None)
    return None


def text_plan(status: int, text: str, headers: dict[str, str]) -> Planned:
    """A short text/plain answer (404, 502), laid out as ``web.Response(text=...)`` lays it out."""
    body = text.encode()
    return Planned(status, HTTPStatus(status).phrase, f"{_lines(headers)}Content-Type: text/plain; charset=utf-8\r\n",
                   body, len(body))


def serialise(planned: Planned, version: tuple[int, int], keep_alive: bool) -> bytes:
    """Status line and header block of ``planned``, laid out as aiohttp lays out the same response.

    The fields go: the planned ones, then Content-Length, Date, Server and,
    when needed, Connection (HTTP/1.1 close, or HTTP/1.0 keep-alive).
    """
    head = f"HTTP/{version[0]}.{version[1]} {planned.status} {planned.reason}\r\n{planned.head}"
    if planned.length is not None:
        head += f"Content-Length: {planned.length}\r\n"
    head += _date() + _SERVER
    if version >= (1, 1):
        if not keep_alive:
            head += "Connection: close\r\n"
    elif keep_alive:
        head += "Connection: keep-alive\r\n"
    return (head + "\r\n").encode("latin-1")


class CachedResponse(web.StreamResponse):
    """A ``Planned`` response sent from ``prepare`` as one write of header bytes + body.

    The handler calls ``prepare``; aiohttp's own later ``prepare`` and
    ``write_eof`` then see a finished response.  HEAD gets the same fields and
    no body (RFC 9110 9.3.2).  There are no ``on_response_prepare`` signals in
    this app, so skipping them changes nothing.
    """

    def __init__(self, planned: Planned) -> None:
        super().__init__(status=planned.status)
        self._planned = planned

    @property
    def content_length(self) -> int | None:
        return self._planned.length

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        self._eof_sent = True
        data = serialise(self._planned, request.version, keep_alive)
        payload = self._planned.payload
        if request.method == "HEAD" or payload is None:
            transport.write(data)
        else:
            transport.writelines((data, payload))  # one writev on uvloop: the body is not copied
        # Backpressure as aiohttp's own writer applies it: wait while the transport is over its high-water mark.
        await request.writer.drain()
        return None


def _lines(headers: dict[str, str]) -> str:
    return "".join([f"{k}: {v}\r\n" for k, v in headers.items()])


def _merged(headers: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The entry's fields plus ``extra``; both may vary the response, so Vary lists both (RFC 9110 12.5.5)."""
    out = {**headers, **extra}
    if "Vary" in extra and "Vary" in headers:
        out["Vary"] = f"{headers['Vary']}, {extra['Vary']}"
    return out


def _head(variant: Variant, extra: dict[str, str]) -> str:
    """Serialised fields of ``_merged``; the entry's part is precomputed."""
    if "Vary" in extra and "Vary" in variant.headers:
        return _lines(_merged(variant.headers, extra))
    return variant.head + _lines(extra)


async def respond(
    request: web.Request, entry: Entry, body: Body | None, extra: dict[str, str]
) -> web.StreamResponse:
    """Evaluate conditionals and ranges, then send; ``body`` (if any) is closed here."""
    try:
        decision = _decide(request.method, request.headers, entry)
        planned = _plan(decision, extra)
        if planned is not None:
            resp = CachedResponse(planned)
            await resp.prepare(request)
            return resp
        return await _send(request, *decision, body, extra)
    finally:
        if body is not None:
            body.close()


async def _send(
    request: web.Request,
    variant: Variant,
    outcome: Outcome,
    ranges: list[tuple[int, int]] | None,
    body: Body | None,
    extra: dict[str, str],
) -> web.StreamResponse:
    """What ``plan`` leaves: streamed bodies, several ranges, 412 and 416."""
    size = variant.size
    data = variant.body
    if outcome is Outcome.SEND:
        headers = _merged(variant.headers, extra)
        if data is not None:  # an empty cached body
            resp = web.Response(body=data, headers=headers)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        return await _stream(request, web.StreamResponse(headers=headers), body, [(0, size)], size, None)

    if outcome is Outcome.PARTIAL:
        assert ranges
        if len(ranges) == 1:
            start, end = ranges[0]
            headers = {**_merged(variant.headers, extra), "Content-Range": f"bytes {start}-{end - 1}/{size}"}
            return await _stream(request, web.StreamResponse(status=206, headers=headers), body, ranges, size, None)
        # RFC 9110 14.6: several ranges go in a multipart/byteranges body, parts in the order asked.
        headers = _merged(variant.headers, extra)
        ctype = headers["Content-Type"]
        headers["Content-Type"] = f"multipart/byteranges; boundary={BOUNDARY}"
        heads = [_part_head(ctype, s, e, size) for s, e in ranges]
        if data is not None:
            view = memoryview(data)
            payload = b"".join(b for (s, e), h in zip(ranges, heads) for b in (h, view[s:e])) + _TAIL
            resp = web.Response(status=206, body=payload, headers=headers)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        return await _stream(request, web.StreamResponse(status=206, headers=headers), body, ranges, size, heads)

    if outcome is Outcome.UNSATISFIABLE:
        # RFC 9110 15.5.17: say how long the representation is.
        resp = web.Response(status=416, text="416 range not satisfiable\n",
                            headers={"Content-Range": f"bytes */{size}", **extra})
    else:  # PRECONDITION_FAILED, RFC 9110 13.1.1 / 13.1.4 (NOT_MODIFIED is always planned)
        resp = web.Response(status=412, text="412 precondition failed\n",
                            headers={"ETag": variant.headers["ETag"], **extra})
    await resp.prepare(request)
    await resp.write_eof()
    return resp


async def _stream(
    request: web.Request,
    resp: web.StreamResponse,
    body: Body | None,
    ranges: list[tuple[int, int]],
    size: int,
    heads: list[bytes] | None,
) -> web.StreamResponse:
    if heads is None:
        resp.content_length = sum(e - s for s, e in ranges)
    else:
        resp.content_length = sum(len(h) + e - s for h, (s, e) in zip(heads, ranges)) + len(_TAIL)
    await resp.prepare(request)
    try:
        if request.method != "HEAD":
            assert body is not None
            for i, (start, end) in enumerate(ranges):
                if heads is not None:
                    await resp.write(heads[i])
                await body.send(resp, request, start, end)
            if heads is not None:
                await resp.write(_TAIL)
        await resp.write_eof()
    except Exception as exc:
        raise Aborted(resp) from exc
    return resp
