"""Prometheus metrics of the API process: requests by route and status, upload bytes, the queue.

A registry of its own (not the origin's multiprocess one): the API is one process.  Queue depth by
state (``tonearm_jobs``) and live workers (``tonearm_workers_live``) come from ``JobQueue.stats()`` at
scrape time, in a thread, through the workers' collector.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tonearm.app.worker_metrics import _QueueCollector  # the workers' own: the same gauges on both endpoints

__all__ = ("ApiMetrics",)


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
