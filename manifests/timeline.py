"""The manifests' timeline: media-time segment starts, ending at the master's end.

The packager cuts segments as windows of the media (decode) timeline, which starts with the
encoder's priming (AAC 1024 samples, Opus pre-skip 312); the init segment's edit list says
what is presented: ``priming`` ticks are skipped, then ``presentation_duration`` ticks (the
master's length) are played (14496-12 8.6.6).

Both manifests keep each segment at its media time (its tfdt), and only move the end: HLS
EXTINF is each segment's media duration except the last, which ends ``presentation_duration``
ticks after zero; the MPD's SegmentTimeline is the media timeline and its
mediaPresentationDuration is ``presentation_duration``.  So every manifest lasts the master's
duration, tick for tick, on every rung, and players place each segment where its own
timestamps put it: Chromium's MSE then applies the edit list itself, moving all of them
earlier by the priming, which makes the buffered audio exactly 0 to the master's length.
Measured in Chromium 156, hls.js 1.7.4, Shaka 5.2.12, dash.js 5.2.1:

- a first EXTINF shortened by the priming (the presentation timeline) makes Shaka's HLS
  player, which sets timestampOffset = playlist start - tfdt for each segment, shift segment 2
  onwards by the priming on top of the edit list: 20 ms of audio overwritten at the first
  boundary and the stream 20 ms short;
- an MPD @presentationTimeOffset equal to the priming is applied the same way by dash.js and
  Shaka (SourceBuffer.timestampOffset): the priming skipped twice, a 9 s master buffered to 8.979 s.

With this timeline all four (hls.js and Shaka on HLS, dash.js and Shaka on DASH, both layouts)
buffer exactly 0 to the master's length in one range.
"""

from __future__ import annotations

from manifests.errors import ManifestError
from tonearm.core.model import PackagedRendition

__all__ = ("extinf_ticks",)


def extinf_ticks(p: PackagedRendition) -> list[int]:
    """Ticks of each segment on the manifests' timeline (HLS EXTINF); they sum to ``presentation_duration``."""
    out = [s.duration for s in p.segments]
    out[-1] = p.presentation_duration - p.segments[-1].start
    if out[-1] <= 0:  # the packager joins such a last window to the one before (packager.layout.plan)
        raise ManifestError(f"{p.rung.name}: the last segment starts at tick {p.segments[-1].start}, not before "
                            f"the presentation's end ({p.presentation_duration} ticks)")
    return out
