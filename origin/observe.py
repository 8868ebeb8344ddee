"""Metrics (Prometheus) and the JSON-lines access log.

With several workers (``tonearm serve --workers N``) the server sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client,
so every worker writes its samples to shared files and ``/metrics`` on any
worker reports the sum over all of them (the in-flight gauge is "livesum").
With one worker the registry is simply the process's own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ("METRICS", "AccessLog", "render_metrics", "CONTENT_TYPE_LATEST")

ROUTES = ("media", "init", "manifest", "descriptor", "static", "api", "health", "metrics", "preflight", "other")


class _Metrics:
    def __init__(self) -> None:
        self.requests = Counter("tonearm_http_requests", "HTTP responses by route and status", ["route", "status"])
        self.bytes = Counter("tonearm_http_response_bytes", "Body bytes sent, by route", ["route"])
        self.latency = Histogram(
            "tonearm_http_request_duration_seconds", "Time from request to last byte written, by route", ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("tonearm_http_requests_in_flight", "Requests being served",
                               multiprocess_mode="livesum")
        self.disconnects = Counter("tonearm_http_client_disconnects", "Clients gone before the last byte", ["route"])
        # Label children resolved once: .labels() per request costs more than the increment.
        self._bytes = {r: self.bytes.labels(r) for r in ROUTES}
        self._latency = {r: self.latency.labels(r) for r in ROUTES}
        self._requests: dict[tuple[str, int], Any] = {}

    def observe(self, route: str, status: int, nbytes: int, seconds: float) -> None:
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
        if nbytes:
            self._bytes[route].inc(nbytes)
        self._latency[route].observe(seconds)


METRICS = _Metrics()


def render_metrics() -> bytes:
    """Exposition text; blocking in multiprocess mode (reads the shared files): call in an executor."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


class AccessLog:
    """One JSON object per line: ts, id, method, path, status, bytes, ms, route, remote, and what went wrong.

    Lines are buffered and flushed at most every ``flush_s`` seconds (and at
    shutdown): a write per request would cost more than the request itself.
    """

    def __init__(self, target: str, flush_s: float = 0.5) -> None:
        self.enabled = target != ""
        self._stream: IO[str] | None = None
        if target == "-":
            self._stream = sys.stderr
        elif target:
            self._stream = open(target, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._buf: list[str] = []
        self._flush_s = flush_s
        self._last = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        if self._stream is None:
            return
        self._buf.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        now = time.monotonic()
        if now - self._last >= self._flush_s or len(self._buf) >= 1024:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        if self._stream is None or not self._buf:
            return
        lines, self._buf = self._buf, []
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed log must not take requests down

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self._stream is not sys.stderr:
            self._stream.close()
        self._stream = None
