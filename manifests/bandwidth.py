"""Bit rates declared in manifests, computed from the bytes actually written.

Sizes are media segment bytes (moof + mdat, or the byte range in a single
file).  The init segment (EXT-X-MAP / Initialization) is not counted: RFC 8216
4.1 defines the segment bit rate as "the size of the Media Segment divided by
its EXTINF duration", and the Media Initialization Section is not part of any
Media Segment; it is fetched once per rendition switch, not per segment.
The HLS figures divide by the EXTINF durations (manifests.timeline: media
durations, the last one ending with the master); the DASH ones follow the
MPD's SegmentTimeline, the media timeline.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

from manifests.timeline import extinf_ticks
from tonearm.core.model import PackagedRendition


def _seconds(p: PackagedRendition) -> list[Fraction]:
    """EXTINF of each segment, exactly."""
    return [Fraction(t, p.timescale) for t in extinf_ticks(p)]


def target_duration(p: PackagedRendition) -> int:
    """EXT-X-TARGETDURATION: the longest EXTINF, rounded up (RFC 8216 4.3.3.1 asks at least rounded)."""
    return max(1, math.ceil(max(_seconds(p))))


def average_bandwidth(p: PackagedRendition) -> int:
    """AVERAGE-BANDWIDTH (RFC 8216 4.3.4.2): all segment bytes over the whole presentation (the EXTINF sum), bits/s."""
    total = sum(s.size for s in p.segments)
    return math.ceil(Fraction(8 * total) / sum(_seconds(p)))


def peak_bandwidth(p: PackagedRendition) -> int:
    """BANDWIDTH (RFC 8216 4.1, 4.3.4.2): the peak segment bit rate.

    The largest bit rate of any run of consecutive segments lasting 0.5 to
    1.5 times the target duration.  When no run fits (only possible when the
    whole presentation is shorter than half a target duration, e.g. a 0.3 s
    master with TARGETDURATION 1), the rate of the whole presentation is
    declared: that is all a client can ever fetch, so it is the peak, and it
    equals AVERAGE-BANDWIDTH.
    """
    return _peak_rate([s.size for s in p.segments], extinf_ticks(p), p.timescale, target_duration(p))


def _peak_rate(sizes: Sequence[int], ticks: Sequence[int], timescale: int, target: int) -> int:
    lo, hi = target * timescale, target * timescale * 3  # in half-ticks: 0.5 and 1.5 target durations
    best = 0.0
    for i in range(len(sizes)):
        size = dur = 0
        for j in range(i, len(sizes)):
            size += sizes[j]
            dur += ticks[j]
            if 2 * dur > hi:
                break
            if 2 * dur >= lo:
                best = max(best, 8 * size * timescale / dur)
    if best == 0.0:
        best = 8 * sum(sizes) * timescale / sum(ticks)
    return math.ceil(best)


def min_buffer_time(renditions: Sequence[PackagedRendition]) -> Fraction:
    """MPD@minBufferTime: the longest segment of any rendition, rounded up to the millisecond."""
    longest = max(Fraction(s.duration, p.timescale) for p in renditions for s in p.segments)
    return Fraction(math.ceil(longest * 1000), 1000)


def dash_bandwidth(p: PackagedRendition, min_buffer: Fraction) -> int:
    """Representation@bandwidth (ISO/IEC 23009-1 5.3.5.2).

    The smallest constant rate B such that a client that starts at any
    segment, receives at B and starts playing after ``min_buffer`` seconds
    has every segment complete before its playout time:
    8 * bytes(i..j) / B <= min_buffer + (t_j - t_i) for all i <= j.  Whole
    segments are required (a segment-based player cannot play a partial one),
    which is the conservative reading.  O(n^2) in segments: 0.3 M pairs for a
    one-hour master at 6.4 s.
    """
    sizes = [s.size for s in p.segments]
    starts = [s.start for s in p.segments]
    buffer_ticks = float(min_buffer * p.timescale)
    best = 0.0
    for i in range(len(sizes)):
        acc = 0
        for j in range(i, len(sizes)):
            acc += sizes[j]
            best = max(best, 8 * acc * p.timescale / (buffer_ticks + starts[j] - starts[i]))
    return max(1, math.ceil(best))
