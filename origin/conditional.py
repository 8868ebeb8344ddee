"""Conditional and range evaluation: request headers + validators -> one outcome.

Pure functions of the request headers and the selected representation, so the
precedence rules of RFC 9110 13.2.2 live in one place and the handler maps the
``Outcome`` to a status once.
"""

from __future__ import annotations

import enum
import functools
import re
from email.utils import parsedate_to_datetime
from typing import Mapping

from origin.ranges import UNSATISFIABLE, parse_range

__all__ = ("Outcome", "evaluate")

_ETAG_RE = re.compile(r'(W/)?"([^"]*)"')


class Outcome(enum.Enum):
    SEND = 200
    PARTIAL = 206
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412
    UNSATISFIABLE = 416


@functools.lru_cache(maxsize=256)
def http_date(value: str) -> int | None:
    """Seconds since the epoch, or None for an invalid date (RFC 9110 13.1.3: then ignore the header)."""
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return int(dt.timestamp())


@functools.lru_cache(maxsize=256)
def _etags(value: str) -> tuple[bool, tuple[tuple[bool, str], ...]]:
    """(is "*", ((weak, opaque), ...)) of an If-Match / If-None-Match value."""
    if value.strip() == "*":
        return True, ()
    return False, tuple((bool(w), f'"{tag}"') for w, tag in _ETAG_RE.findall(value))


def _match(value: str, etag: str, *, weak: bool) -> bool:
    star, tags = _etags(value)
    if star:
        return True
    # RFC 9110 8.8.3.2: strong comparison needs both tags strong; weak comparison ignores W/.
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def evaluate(
    method: str, headers: Mapping[str, str], *, etag: str, mtime: int, length: int, ranged: bool = True
) -> tuple[Outcome, list[tuple[int, int]] | None]:
    """Decide the response for a GET or HEAD on a representation with these validators."""
    # RFC 9110 13.2.2 step 1-2: If-Match, else If-Unmodified-Since.
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _match(if_match, etag, weak=False):  # 13.1.1: strong comparison
            return Outcome.PRECONDITION_FAILED, None
    else:
        ius = headers.get("If-Unmodified-Since")
        if ius is not None:
            when = http_date(ius)
            if when is not None and mtime > when:  # 13.1.4
                return Outcome.PRECONDITION_FAILED, None
    # Step 3-4: If-None-Match wins over If-Modified-Since (13.1.3: IMS is ignored when INM is present).
    inm = headers.get("If-None-Match")
    if inm is not None:
        if _match(inm, etag, weak=True):  # 13.1.2: weak comparison
            return Outcome.NOT_MODIFIED, None  # GET/HEAD only reach here
    else:
        ims = headers.get("If-Modified-Since")
        if ims is not None:
            when = http_date(ims)
            if when is not None and mtime <= when:
                return Outcome.NOT_MODIFIED, None
    # Step 5: Range, guarded by If-Range (13.1.5).  HEAD answers as GET would (9.3.2), as nginx does.
    rng = headers.get("Range")
    if rng is None or not ranged:
        return Outcome.SEND, None
    if_range = headers.get("If-Range")
    if if_range is not None:
        value = if_range.strip()
        if value.startswith(('"', "W/")):
            if value != etag:  # strong comparison; a weak tag never matches (13.1.5)
                return Outcome.SEND, None
        elif http_date(value) != mtime:  # a date must match Last-Modified exactly (13.1.5)
            return Outcome.SEND, None
    parsed = parse_range(rng, length)
    if parsed is None:
        return Outcome.SEND, None
    if parsed is UNSATISFIABLE:
        return Outcome.UNSATISFIABLE, None
    return Outcome.PARTIAL, parsed
