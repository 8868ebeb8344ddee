"""Why a manifest could not be written (root: ``TonearmError``)."""

from __future__ import annotations

from tonearm.core.errors import TonearmError

__all__ = ("ManifestError",)


class ManifestError(TonearmError, ValueError):
    """The packaged renditions cannot be described as asked (a bug upstream, or a bad layout)."""

    code = "manifest_failed"
