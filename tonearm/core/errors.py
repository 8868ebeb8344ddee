"""The one error root: every failure tonearm reports carries a stable ``code``.

Each stage raises its own subclasses (``ingest.Rejected``, ``FfmpegError``,
``PackagerError``, ``ManifestError``, ``CatalogError``, ``ConfigError``, ...)
and each is caught at one boundary: the pipeline turns it into the job
record's ``JobError`` (code, message, details), the CLI into one line.
Codes are part of the public interface (job records, ``reason.json``,
``--json`` output): add new ones, never rename.
"""

from __future__ import annotations

from typing import Any

__all__ = ("TonearmError",)


class TonearmError(Exception):
    """A failure with a stable, machine-readable ``code`` and JSON-able ``details``."""

    code = "internal_error"

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})
