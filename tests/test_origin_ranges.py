"""``parse_range`` and ``evaluate`` on cases nginx cannot arbitrate (RFC 9110 sections 13 and 14)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from origin.conditional import Outcome, evaluate
from origin.ranges import MAX_RANGES, UNSATISFIABLE, parse_range

L = 1000


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-9, ", [(0, 10)]),  # 5.6.1: empty list elements are ignored
    ("bytes=,0-9", [(0, 10)]),
    ("bytes= 0-9 ,\t10-19", [(0, 10), (10, 20)]),  # OWS around list elements
    ("Bytes=0-0", [(0, 1)]),  # range units are case-insensitive (14.1)
    ("bytes=0-9,x", None),  # one invalid spec makes the whole header invalid: ignored
    ("bytes=9-0", None),  # 14.1.1: last-pos < first-pos is invalid
    ("bytes=1000-", UNSATISFIABLE),  # 14.1.1: first-pos at or past the length
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=-0,-0", UNSATISFIABLE),
    ("bytes=1000-1001,0-4", [(0, 5)]),  # unsatisfiable parts are dropped, the rest served
    ("bytes=-2000", [(0, L)]),  # suffix longer than the representation: all of it
    ("bytes=0-" + "9" * 30, [(0, L)]),  # 14.1.2: clip to the length, whatever the number
    ("bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), None),  # 14.2: many small ranges may be ignored
    ("bytes=0-599,400-999", None),  # overlapping ranges asking for more than the file: ignored (14.2)
    ("none", None),
    ("bytes", None),
    ("=0-1", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, L) == expected


def test_empty_representation_ignores_ranges():
    assert parse_range("bytes=0-10", 0) is None


MTIME = 1_700_000_000
ETAG = '"abc-10"'


def at(offset: int) -> str:
    return formatdate(MTIME + offset, usegmt=True)


@pytest.mark.parametrize(("method", "headers", "outcome"), [
    # 13.2.2: If-Match is evaluated first and If-Unmodified-Since is ignored when it is present.
    ("GET", {"If-Match": ETAG, "If-Unmodified-Since": at(-100)}, Outcome.SEND),
    ("GET", {"If-Match": f"W/{ETAG}"}, Outcome.PRECONDITION_FAILED),  # 13.1.1: strong comparison
    ("GET", {"If-Match": '"x", ' + ETAG}, Outcome.SEND),
    ("GET", {"If-Unmodified-Since": "not a date"}, Outcome.SEND),  # 13.1.4: invalid date ignored
    ("GET", {"If-Unmodified-Since": at(+5)}, Outcome.SEND),
    # 13.2.2: a failed If-Match wins over a matching If-None-Match.
    ("GET", {"If-Match": '"x"', "If-None-Match": ETAG}, Outcome.PRECONDITION_FAILED),
    ("HEAD", {"If-None-Match": f"W/{ETAG}"}, Outcome.NOT_MODIFIED),  # 13.1.2: weak comparison
    ("GET", {"If-None-Match": ETAG, "If-Modified-Since": at(-100)}, Outcome.NOT_MODIFIED),
    ("GET", {"If-None-Match": '"x"', "If-Modified-Since": at(+100)}, Outcome.SEND),  # IMS ignored
    ("GET", {"If-Modified-Since": at(0)}, Outcome.NOT_MODIFIED),
    ("GET", {"If-Modified-Since": at(-1)}, Outcome.SEND),
    # 13.1.5: If-Range without Range is ignored; with a weak tag or a different date the range is dropped.
    ("GET", {"If-Range": '"x"'}, Outcome.SEND),
    ("GET", {"If-Range": ETAG, "Range": "bytes=0-1"}, Outcome.PARTIAL),
    ("GET", {"If-Range": f"W/{ETAG}", "Range": "bytes=0-1"}, Outcome.SEND),
    ("GET", {"If-Range": at(0), "Range": "bytes=0-1"}, Outcome.PARTIAL),
    ("GET", {"If-Range": at(1), "Range": "bytes=0-1"}, Outcome.SEND),
    ("GET", {"If-Range": ETAG, "Range": "bytes=5000-"}, Outcome.UNSATISFIABLE),
])
def test_evaluate_precedence(method, headers, outcome):
    assert evaluate(method, headers, etag=ETAG, mtime=MTIME, length=L)[0] is outcome
