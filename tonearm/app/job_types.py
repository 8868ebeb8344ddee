"""The job types: states, the job and event records, the queue protocol and submit's bounds.

The contract and its rules (idempotence on content, priorities, backends) are described in
:mod:`tonearm.app.jobs`, which re-exports all of these with ``open_queue``; the backends import them
from here so that ``jobs`` can import the backends without a cycle.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, Sequence

import msgspec

from tonearm.core.config_intake import WEBHOOK_EVENTS
from tonearm.core.errors import TonearmError

__all__ = ("JobState", "TERMINAL", "ACTIVE", "Job", "Event", "JobQueue", "JobNotFound",
           "Tombstoned", "PRIORITY_NEW_RELEASE", "PRIORITY_DEFAULT", "PRIORITY_BACK_CATALOGUE", "ORIGINS",
           "EVENT_TYPES", "check_submit", "PRIORITY_RANGE")

PRIORITY_NEW_RELEASE = 10
PRIORITY_DEFAULT = 0
PRIORITY_BACK_CATALOGUE = -10
PRIORITY_RANGE = (-100, 100)
ORIGINS = ("cli", "watch", "bucket", "api")
EVENT_TYPES = WEBHOOK_EVENTS  # the one list, kept with the [webhooks] schema that validates against it


class JobState(enum.StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    TRANSCODING = "transcoding"
    PACKAGING = "packaging"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobState] = frozenset({JobState.PUBLISHED, JobState.QUARANTINED, JobState.FAILED,
                                           JobState.CANCELLED})
ACTIVE: frozenset[JobState] = frozenset(JobState) - TERMINAL - {JobState.QUEUED}  # a worker is on it


class Job(msgspec.Struct, kw_only=True):
    id: str
    state: JobState
    source: str  # a local path, or s3://bucket/key
    filename: str  # the master's name as given (printable); never trusted as a path
    origin: str  # one of ORIGINS
    priority: int
    asset_id: str | None  # the content hash; None until known (a source not yet read)
    attempts: int  # runs started (the fencing token of the asset lease the run holds)
    error_code: str | None
    error_message: str | None
    progress: dict[str, float]  # rendition name -> 0..1 while transcoding
    created_at: float
    updated_at: float

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class Event(msgspec.Struct, kw_only=True):
    id: int  # increasing: a consumer keeps the last id it handled and asks for events_since(it)
    type: str  # one of EVENT_TYPES
    asset_id: str | None
    job_id: str | None
    at: float
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class JobNotFound(TonearmError, KeyError):
    code = "job_not_found"


class Tombstoned(TonearmError):
    """These bytes were taken down: re-ingest needs ``force`` (``--force``, ``?force=true``)."""

    code = "asset_taken_down"


class JobQueue(Protocol):
    def submit(self, source: str, *, filename: str | None = None, priority: int = 0, origin: str = "cli",
               force: bool = False, asset_id: str | None = None) -> Job:
        """Queue a master (idempotent on content; ``asset_id``: the hash, if the caller computed it)."""

    def get(self, job_id: str) -> Job | None: ...

    def list(self, *, state: JobState | None = None, limit: int = 100) -> list[Job]: ...

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or kill a running one's processes (within seconds); terminal: unchanged."""

    def wait(self, job_ids: Sequence[str], timeout: float | None = None) -> list[Job]:
        """Block until every job is terminal (or the timeout passes); the jobs as they are then."""

    def repackage(self, asset_id: str) -> Job:
        """Re-run packaging with the current ladder; the new version is published atomically."""

    def take_down(self, asset_id: str) -> None:
        """Tombstone the asset and write its ``taken_down`` event in one transaction (the caller
        unpublishes the storage: descriptor first, then media)."""

    def is_tombstoned(self, asset_id: str) -> bool: ...

    def events_since(self, after_id: int, limit: int = 100) -> list[Event]: ...

    def stats(self) -> dict[str, Any]:
        """{"jobs": {state: count}, "workers": live worker count} for metrics."""

    def close(self) -> None: ...


def check_submit(priority: int, origin: str) -> None:
    """Bounds every backend applies to ``submit``'s arguments."""
    lo, hi = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not lo <= priority <= hi:
        raise ValueError(f"priority: an integer in [{lo}, {hi}], got {priority!r}")
    if origin not in ORIGINS:
        raise ValueError(f"origin: one of {', '.join(ORIGINS)}, got {origin!r}")
