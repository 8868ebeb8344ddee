"""Parsing the ``Range`` header (RFC 9110 section 14) into byte intervals.

The answer is one of three things, and the handler maps it to a status:
``None`` (ignore the header: send 200), ``UNSATISFIABLE`` (416) or a list of
half-open ``(start, end)`` intervals (206, multipart when more than one).

Where nginx 1.22 and RFC 9110 differ, the origin follows the RFC:

* A syntactically invalid ranges-specifier (``bytes=abc``, ``bytes=5-2``,
  ``bytes=-``, ``bytes=0-10,x``) is ignored and the whole file is sent (200);
  nginx answers 416.  RFC 9110 14.2 lets a server ignore or reject it; ignoring
  gives a broken client the bytes it can use instead of an error.
* A last-pos beyond the file (``bytes=0-99999999999999999999``) is clipped to
  the length (206), RFC 9110 14.1.2; nginx answers 416 because the number
  overflows its off_t.  Python integers do not overflow, so the clip is exact.

Everywhere else the behaviour is nginx's, which the RFC also allows: ranges
are served in the order asked, overlapping ranges are not coalesced, and a set
of ranges whose sizes add up to more than the file is ignored (200) as a
denial-of-service indicator (RFC 9110 14.2).
"""

from __future__ import annotations

import enum

__all__ = ("UNSATISFIABLE", "parse_range", "MAX_RANGES")

# More parts than this is "many small ranges" (RFC 9110 14.2): ignore the header.
MAX_RANGES = 64


class _Unsatisfiable(enum.Enum):
    UNSATISFIABLE = "unsatisfiable"


UNSATISFIABLE = _Unsatisfiable.UNSATISFIABLE

_DIGITS = frozenset("0123456789")


def _int(text: str) -> int | None:
    return int(text) if text and len(text) <= 40 and _DIGITS.issuperset(text) else None


def parse_range(header: str, length: int) -> list[tuple[int, int]] | _Unsatisfiable | None:
    """Intervals ``[start, end)`` for a ``Range`` header on a representation of ``length`` bytes."""
    if length == 0:
        return None  # nothing to slice: send the (empty) representation, as nginx does
    unit, sep, spec = header.partition("=")
    # RFC 9110 14.2: a range unit the server does not understand MUST be ignored.
    if not sep or unit.strip().lower() != "bytes":
        return None
    # RFC 9110 5.6.1: list elements are separated by commas with optional whitespace; empty ones are skipped.
    specs = [s.strip(" \t") for s in spec.split(",")]
    specs = [s for s in specs if s]
    if not specs or len(specs) > MAX_RANGES:
        return None  # RFC 9110 14.1.1 needs at least one range-spec; 14.2 lets us ignore "many small ranges"
    out: list[tuple[int, int]] = []
    total = 0
    for s in specs:
        first, dash, last = s.partition("-")
        if not dash:
            return None
        if first == "":
            # suffix-range, RFC 9110 14.1.1: the last N bytes.
            n = _int(last)
            if n is None:
                return None
            if n == 0:
                continue  # a zero-length suffix is unsatisfiable (14.1.1), not invalid
            start, end = max(0, length - n), length
        else:
            start = _int(first)
            if start is None:
                return None
            if last == "":
                end = length  # open-ended: to the end of the representation
            else:
                stop = _int(last)
                # RFC 9110 14.1.1: a last-pos below first-pos makes the byte-range-spec invalid.
                if stop is None or stop < start:
                    return None
                end = min(stop + 1, length)  # RFC 9110 14.1.2: clip to the current length
            if start >= length:
                continue  # unsatisfiable on its own; the others may still be served (14.1.1)
        if start < end:
            out.append((start, end))
            total += end - start
    if not out:
        # RFC 9110 15.5.17: none of the ranges overlaps the representation.
        return UNSATISFIABLE
    if total > length:
        return None  # overlapping ranges asking for more than the file: RFC 9110 14.2, nginx does the same
    return out
