"""Prometheus metrics of the API process: requests by route and status, upload bytes, the queue.

A registry of its own (not the origin's multiprocess one): the API is one process.  Queue depth by
state and live workers come from ``JobQueue.stats()`` at scrape time, in a thread.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = ("ApiMetrics",)


class _QueueCollector:
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self.queue.stats()
        except Exception:  # a scrape must not fail because the catalog is briefly unreachable
            return
        jobs = GaugeMetricFamily("tonearm_api_queue_jobs", "Jobs in the queue by state", labels=["state"])
        for state, n in sorted((stats.get("jobs") or {}).items()):
            jobs.add_metric([str(state)], float(n))
        yield jobs
        if "workers" in stats:
            yield GaugeMetricFamily("tonearm_api_queue_workers", "Live workers", value=float(stats["workers"]))


class ApiMetrics:
    def __init__(self, queue: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tonearm_api_requests_total", "API requests", ["method", "route", "status"],
                                registry=self.registry)
        self.duration = Histogram("tonearm_api_request_duration_seconds", "API request time", ["route"],
                                  registry=self.registry)
        self.upload_bytes = Counter("tonearm_api_upload_bytes_total", "Bytes of masters received",
                                    ["kind"], registry=self.registry)
        self.uploads = Counter("tonearm_api_uploads_total", "Uploads by outcome", ["kind", "outcome"],
                               registry=self.registry)
        self.registry.register(_QueueCollector(queue))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
