"""Why packaging failed: one subtype per cause, each with a stable code (root: ``TonearmError``)."""

from __future__ import annotations

from tonearm.core.errors import TonearmError

__all__ = ("PackagerError", "DemuxError", "BoxError", "CodecError")


class PackagerError(TonearmError, ValueError):
    """A rendition cannot be packaged as asked."""

    code = "packaging_failed"


class DemuxError(PackagerError):
    """The encoder's MP4 cannot be read as one audio track (truncated, damaged, unexpected)."""

    code = "encoder_output_unreadable"


class BoxError(DemuxError):
    """An ISOBMFF box is malformed (sizes that run past their parent, bad headers)."""

    code = "malformed_box"


class CodecError(PackagerError):
    """The sample entry is not one the codec table describes."""

    code = "unsupported_codec"
