"""The ``[catalog]`` and ``[jobs]`` sections of the one config schema (:mod:`tonearm.core.config`).

Kept apart so the schema's main file stays readable; :mod:`tonearm.core.config` lists them in
``Config`` and calls :func:`catalog_problems` from ``validate``.  A catalog URL may hold a password:
no message repeats it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from tonearm.core.config_section import Section

__all__ = ("CatalogConfig", "JobsConfig", "catalog_problems")

AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]


_Section = Section


class CatalogConfig(_Section):
    """Where the catalog and the job queue live (env ``TONEARM_CATALOG_URL``)."""

    url: str = ""  # "" (default): sqlite:///<data dir>/catalog.sqlite3; or sqlite:///path; or postgresql://...

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))


class JobsConfig(_Section):
    """The job queue and its workers (``tonearm worker``, :mod:`tonearm.app.jobs`)."""

    concurrency: AtLeastOne = 1  # jobs one worker runs at once (one child process each)
    max_deaths: AtLeastOne = 3  # runs that died (worker or job process killed) before the job fails as poison
    retry_attempts: AtLeastOne = 5  # runs ending in a transient error (storage, killed) before the job fails
    retry_base_s: Seconds = 5.0  # backoff before retry n: retry_base_s * 2**(n-1)
    heartbeat_s: Seconds = 2.0  # how often a worker says it is alive
    stalled_s: Seconds = 20.0  # a running job whose worker was silent this long is taken back
    poll_s: Seconds = 0.5  # how often a running job checks for cancellation and reports progress


def catalog_problems(c: CatalogConfig, j: JobsConfig) -> list[str]:
    out = []
    ok = (c.url.startswith("sqlite:///") and len(c.url) > len("sqlite:///")) or c.is_postgres
    if c.url and not ok:
        out.append("[catalog] url: expected sqlite:///path or postgresql://user@host:port/db")
    if any(ch in c.url for ch in "\r\n\x00"):
        out.append("[catalog] url: control characters are not allowed")
    if j.stalled_s <= 2 * j.heartbeat_s:
        out.append(f"[jobs] stalled_s: must exceed twice heartbeat_s ({j.heartbeat_s:g} s), got {j.stalled_s:g}")
    return out
