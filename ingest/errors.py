"""Why a master is rejected: one stable code per reason, defined here only.

A rejection is a ``JobError`` (``code``, human ``message``, ``details``)
carried by :class:`Rejected`.  Codes are part of the public interface (they
land in ``reason.json``, the catalog and ``tonearm ingest --json``); add new
ones, never rename.

======================== ============================================================
code                     meaning
======================== ============================================================
``not_found``            the path does not exist (or is a dangling symlink)
``symlink_outside_input`` a symlink found in an input folder points outside that folder;
                         it is never followed and never copied
``not_a_file``           not a regular file (FIFO, socket, device, ...)
``unreadable``           the OS refused to open or read the file (permissions, I/O error)
``empty_file``           zero bytes
``too_large``            bigger than the configured maximum (``[ingest] max_bytes``)
``too_long``             longer than ``[ingest] max_duration`` (or ``max_samples`` for many
                         channels at high rates), by its header or by decoding
``not_audio``            not one of the accepted containers (``ingest.formats``): random data,
                         text, playlists (HLS, DASH, ffconcat), ...
``no_audio_stream``      a recognised container without any audio stream (video-only)
``unsupported_channels`` fewer than 1 or more than 8 channels
``unsupported_sample_rate`` sample rate outside 8,000-192,000 Hz
``decode_error``         the decoder or demuxer reported an error somewhere in the stream
``truncated``            fewer samples decode than the header promises (cut-off file)
``duration_mismatch``    more audio than the header states (e.g. a WAV ``data`` size
                         smaller than the audio that follows it)
``zero_duration``        the stream decodes to no samples at all
``ffmpeg_not_found``     no usable ffmpeg (from ``tonearm.core.ffmpeg``)
``ffmpeg_timeout``       the decode pass exceeded ``[ffmpeg] timeout`` (from ``tonearm.core.ffmpeg``)
``ffmpeg_failed``        ffmpeg exited non-zero for a reason not listed above
======================== ============================================================

Digital silence and clipping are *flags* on ``Loudness`` (``silent``,
``clipping``), not rejections: a silent intro track or a loud, clipped master
is a valid artistic choice the publisher may want; the flags let an operator
review them without losing the upload.
"""

from __future__ import annotations

from typing import Any

from tonearm.core.errors import TonearmError
from tonearm.core.model import JobError

NOT_FOUND = "not_found"
SYMLINK_OUTSIDE_INPUT = "symlink_outside_input"
NOT_A_FILE = "not_a_file"
UNREADABLE = "unreadable"
EMPTY_FILE = "empty_file"
TOO_LARGE = "too_large"
TOO_LONG = "too_long"
NOT_AUDIO = "not_audio"
NO_AUDIO_STREAM = "no_audio_stream"
UNSUPPORTED_CHANNELS = "unsupported_channels"
UNSUPPORTED_SAMPLE_RATE = "unsupported_sample_rate"
DECODE_ERROR = "decode_error"
TRUNCATED = "truncated"
DURATION_MISMATCH = "duration_mismatch"
ZERO_DURATION = "zero_duration"
FFMPEG_NOT_FOUND = "ffmpeg_not_found"
FFMPEG_TIMEOUT = "ffmpeg_timeout"
FFMPEG_FAILED = "ffmpeg_failed"

ERROR_CODES: tuple[str, ...] = (
    NOT_FOUND, SYMLINK_OUTSIDE_INPUT, NOT_A_FILE, UNREADABLE, EMPTY_FILE, TOO_LARGE, NOT_AUDIO,
    NO_AUDIO_STREAM, UNSUPPORTED_CHANNELS, UNSUPPORTED_SAMPLE_RATE, DECODE_ERROR, TRUNCATED,
    DURATION_MISMATCH, ZERO_DURATION, FFMPEG_NOT_FOUND, FFMPEG_TIMEOUT, FFMPEG_FAILED, TOO_LONG,
)


class Rejected(TonearmError):
    """A master that must not be published; ``error`` says why (its code is one of the above)."""

    def __init__(self, error: JobError) -> None:
        super().__init__(f"{error.code}: {error.message}", details=error.details)
        self.error = error
        self.code = error.code


def reject(code: str, message: str, **details: Any) -> Rejected:
    """Build a :class:`Rejected` for one of the codes above (``raise reject(...)``)."""
    assert code in ERROR_CODES, code
    return Rejected(JobError(code=code, message=message, details=details))
