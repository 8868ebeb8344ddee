"""Metrics (Prometheus) and the JSON-lines access log.

With several workers (``tonearm serve --workers N``) the server sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client,
so every worker writes its samples to shared files and ``/metrics`` on any
worker reports the sum over all of them (the in-flight gauge is "livesum").
With one worker the registry is simply the process's own.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from typing import IO, Any

from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from origin.signing import redact

__all__ = ("METRICS", "AccessLog", "BadRequestFilter", "render_metrics", "CONTENT_TYPE_LATEST")

ROUTES = ("media", "init", "manifest", "descriptor", "static", "api", "health", "metrics", "preflight", "keys",
          "other")


class _Metrics:
    """Request metrics, counted in plain ints on the hot path and pushed to Prometheus in batches.

    A Prometheus increment in multiprocess mode is a locked write to a shared
    file; several per request would cost more than serving a cached segment.
    ``flush`` (every half second, and before each scrape) moves the counts
    over, so another worker's figures in ``/metrics`` are at most that old.
    The latency histogram is observed per request.
    """

    def __init__(self) -> None:
        self.requests = Counter("tonearm_http_requests", "HTTP responses by route and status", ["route", "status"])
        self.bytes = Counter("tonearm_http_response_bytes", "Body bytes sent, by route", ["route"])
        self.latency = Histogram(
            "tonearm_http_request_duration_seconds", "Time from request to last byte written, by route", ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("tonearm_http_requests_in_flight", "Requests being served (sampled twice a second)",
                               multiprocess_mode="livesum")
        self.disconnects = Counter("tonearm_http_client_disconnects", "Clients gone before the last byte", ["route"])
        self.fast = Counter("tonearm_http_fast_path_responses",
                            "Responses sent by the fast path (origin.fastpath) rather than through aiohttp")
        self.sendfile = Counter("tonearm_http_sendfile_responses",
                                "Fast-path responses whose body went out by sendfile from the page cache")
        # Label children resolved once: .labels() per request costs more than the increment.
        self._latency = {r: self.latency.labels(r) for r in ROUTES}
        self.active = 0
        self._counts: dict[tuple[str, int], int] = {}
        self._sent: dict[str, int] = {}
        self.fast_served = 0  # counted by origin.fastpath
        self.fast_sendfile = 0  # of those, bodies sent (at least in part) by sendfile

    def observe(self, route: str, status: int, nbytes: int, seconds: float) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        if nbytes:
            self._sent[route] = self._sent.get(route, 0) + nbytes
        self._latency[route].observe(seconds)

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        sent, self._sent = self._sent, {}
        for (route, status), n in counts.items():
            self.requests.labels(route, str(status)).inc(n)
        for route, n in sent.items():
            self.bytes.labels(route).inc(n)
        fast, self.fast_served = self.fast_served, 0
        if fast:
            self.fast.inc(fast)
        sendfile, self.fast_sendfile = self.fast_sendfile, 0
        if sendfile:
            self.sendfile.inc(sendfile)
        self.in_flight.set(self.active)


METRICS = _Metrics()


class BadRequestFilter(logging.Filter):
    """Counts a client's malformed request instead of logging its traceback at ERROR.

    aiohttp answers 400 (or 431, 501) to a request it cannot parse, without
    reaching the origin's handler, and logs it as "Error handling request"
    with a traceback: anyone on the internet could fill the log that way.
    Installed on ``aiohttp.server`` by ``tonearm serve``: such records become
    a count in ``tonearm_http_requests{route="other",status=...}``; every
    other record passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            METRICS.observe("other", exc.code or 400, 0, 0.0)
            return False
        return True


def render_metrics() -> bytes:
    """Exposition text; blocking in multiprocess mode (reads the shared files): call in an executor.

    Call ``METRICS.flush()`` on the loop first so this worker's latest counts are included.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def _str(value: str | None) -> str:
    return json.dumps(value, ensure_ascii=False)


class AccessLog:
    """One JSON object per line: ts, id, method, path, status, bytes, ms, route, remote, range, error.

    Lines are buffered and handed over at most every ``flush_s`` seconds (and
    at shutdown): a write per request would cost more than the request itself.
    The writing itself happens on a writer thread, so a slow or blocked log
    pipe never stalls the event loop; past ``max_batches`` waiting batches new
    lines are dropped and counted in ``dropped`` rather than queued forever.
    A broken log (a closed pipe, a full disk) costs its lines, never a request
    or the shutdown: no method here raises because of the stream.  Signatures
    of signed URLs are redacted from the logged path.
    """

    def __init__(self, target: str, flush_s: float = 0.5, max_batches: int = 64, *,
                 stream: IO[str] | None = None) -> None:
        self.enabled = target != "" or stream is not None
        self._stream: IO[str] | None = stream  # given: a stream of the caller's (tests), closed by close()
        if stream is None and target == "-":
            self._stream = sys.stderr
        elif stream is None and target:
            self._stream = open(target, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._buf: list[str] = []
        self._flush_s = flush_s
        self._last = time.monotonic()
        self.dropped = 0
        self._queue: queue.Queue[list[str] | None] = queue.Queue(maxsize=max_batches)
        self._writer: threading.Thread | None = None
        if self._stream is not None:
            self._writer = threading.Thread(target=self._drain, args=(self._stream,), name="access-log", daemon=True)
            self._writer.start()

    def _drain(self, stream: IO[str]) -> None:
        while (lines := self._queue.get()) is not None:
            try:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
            except Exception:  # noqa: BLE001 - a broken or closed log (EPIPE, ENOSPC, closed file) loses lines only
                pass

    def write(self, request: Any, rid: str, status: int, nbytes: int, seconds: float, route: str,
              error: str | None) -> None:
        """Append the record of an aiohttp request (see ``record``)."""
        if self._stream is None:
            return
        path = request.raw_path
        if path.startswith("/s/"):
            path = redact(path)
        elif "%" in path[1:3] and request.path.startswith("/s/"):  # "/%73/...", "/s%2F...": signed once decoded
            path = redact(request.path) + (f"?{request.query_string}" if request.query_string else "")
        self.record(request.method, path, rid, status, nbytes, seconds, route, request.remote,
                    request.headers.get("Range"), error)

    def record(self, method: str, path: str, rid: str, status: int, nbytes: int, seconds: float, route: str,
               remote: str | None, rng: str | None, error: str | None) -> None:
        """Append one record (``path`` already redacted); formatted by hand (a json.dumps of a dict costs 5x
        more), strings JSON-escaped."""
        if self._stream is None:
            return
        line = (f'{{"ts":{time.time():.3f},"id":"{rid}","method":{_str(method)},'
                f'"path":{_str(path[:512])},"status":{status},"bytes":{nbytes},'
                f'"ms":{seconds * 1000:.3f},"route":"{route}","remote":{_str(remote)}')
        if rng is not None:
            line += f',"range":{_str(rng[:200])}'
        if error:
            line += f',"error":{_str(error)}'
        self._buf.append(line + "}")
        now = time.monotonic()
        if now - self._last >= self._flush_s or len(self._buf) >= 1024:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        if self._stream is None or not self._buf:
            return
        lines, self._buf = self._buf, []
        try:
            self._queue.put_nowait(lines)
        except queue.Full:
            self.dropped += len(lines)

    def close(self) -> None:
        """Hand over the last lines, stop the writer (waiting up to 5 s), close the stream; never raises."""
        self.flush()
        stream, self._stream = self._stream, None  # from now on write() and flush() drop lines
        if self._writer is not None and self._writer.is_alive():
            try:
                self._queue.put(None, timeout=5)
            except queue.Full:
                pass
            self._writer.join(timeout=5)
            if self._writer.is_alive():  # stuck in a write nobody reads: closing would wait on its lock
                return
        if stream is not None and stream is not sys.stderr:
            try:
                stream.close()  # flushes what a failed write left buffered: into a broken pipe, that raises
            except Exception:  # noqa: BLE001 - the descriptor is closed even when the flush fails
                pass

