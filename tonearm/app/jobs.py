"""Jobs: the contract between intake (CLI, drop folders, bucket, API) and the workers.

A job is one request to turn a master into a published asset.  Its row (state, attempts, error,
progress per rendition) lives in the catalog's ``jobs`` table; with PostgreSQL the procrastinate job
that runs it is enqueued in the same transaction, and every state change writes its ``events`` row
(the outbox webhooks are sent from) in that transaction too.

    queued -> validating -> transcoding -> packaging -> publishing -> published
                                                     \\-> quarantined | failed | cancelled

Idempotence is on content: ``submit`` hashes a local master (or takes the hash the caller already
computed while receiving it), and the asset id is that hash.  A second submit of the same bytes
while a job for them is live returns that job; bytes already published give a job that is
``published`` at once, with no work; a tombstoned (taken down) asset is refused unless ``force``.

Priorities: higher runs first.  ``PRIORITY_NEW_RELEASE`` (10) for new releases, ``PRIORITY_DEFAULT``
(0) for everything else, ``PRIORITY_BACK_CATALOGUE`` (-10) for bulk back-catalogue loads; any int in
[-100, 100] is accepted.

Backends (``[catalog] url``, one place: :func:`open_queue`): ``postgresql://...`` gives
:class:`tonearm.app.queue_pg.PgQueue` (procrastinate; ``tonearm worker`` processes run the jobs);
the SQLite default gives :class:`tonearm.app.queue_local.LocalQueue` (jobs run in this process's
own pool of child processes, as ``tonearm ingest`` always did).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tonearm.app.job_types import (
    ACTIVE,
    EVENT_TYPES,
    ORIGINS,
    PRIORITY_BACK_CATALOGUE,
    PRIORITY_DEFAULT,
    PRIORITY_NEW_RELEASE,
    PRIORITY_RANGE,
    TERMINAL,
    Event,
    Job,
    JobNotFound,
    JobQueue,
    JobState,
    Tombstoned,
    check_submit,
)

if TYPE_CHECKING:
    from tonearm.core.config import Config

__all__ = ("JobState", "TERMINAL", "ACTIVE", "Job", "Event", "JobQueue", "open_queue", "JobNotFound",
           "Tombstoned", "PRIORITY_NEW_RELEASE", "PRIORITY_DEFAULT", "PRIORITY_BACK_CATALOGUE", "PRIORITY_RANGE",
           "ORIGINS", "EVENT_TYPES", "check_submit")


def open_queue(cfg: "Config") -> JobQueue:
    """The queue of the configured catalog: PostgreSQL (procrastinate) or the local SQLite pool."""
    if cfg.catalog.is_postgres:
        from tonearm.app.queue_pg import PgQueue

        return PgQueue(cfg)
    from tonearm.app.queue_local import LocalQueue

    return LocalQueue(cfg)
