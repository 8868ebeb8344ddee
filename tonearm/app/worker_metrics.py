"""Prometheus metrics of a worker (``tonearm worker --metrics-port``): queue depth by state, live
workers, job durations by outcome, failures by code.  Depth and workers are read from the queue
when scraped (on the exporter's thread, never the worker's event loop)."""

from __future__ import annotations

import logging
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("tonearm.app.worker")

__all__ = ("Metrics",)

DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class _QueueCollector:
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self.queue.stats()
        except Exception as exc:  # the catalog is away: no depth this scrape
            log.warning("metrics: queue stats unavailable: %s", exc)
            return
        depth = GaugeMetricFamily("tonearm_jobs", "Jobs in the queue by state", labels=["state"])
        for state, n in sorted(stats["jobs"].items()):
            depth.add_metric([state], n)
        yield depth
        yield GaugeMetricFamily("tonearm_workers_live", "Workers whose heartbeat is current", value=stats["workers"])


class Metrics:
    def __init__(self, queue: Any, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        self.durations = Histogram("tonearm_job_seconds", "Wall time of finished job runs", ["outcome"],
                                   buckets=DURATION_BUCKETS, registry=self.registry)
        self.failures = Counter("tonearm_job_failures", "Job runs that did not publish, by error code", ["code"],
                                registry=self.registry)
        self.registry.register(_QueueCollector(queue))
        self.server = None
        self.port = None
        if port is not None:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
            self.port = self.server.server_port
            log.warning("worker metrics on http://%s:%d/metrics", host, self.port)

    def done(self, outcome: str, seconds: float) -> None:
        self.durations.labels(outcome).observe(seconds)

    def failed(self, code: str) -> None:
        self.failures.labels(code[:64]).inc()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
