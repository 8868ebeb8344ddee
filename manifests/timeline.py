"""What the listener hears of each segment: the presentation timeline of a rendition.

The packager cuts segments as windows of the media (decode) timeline, which starts with the
encoder's priming (AAC 1024 samples, Opus pre-skip 312) and may end with padding; the init
segment's edit list says what is presented: ``priming`` ticks are skipped, then
``presentation_duration`` ticks (the master's length) are played (14496-12 8.6.6).  A segment's
presented part is its media window shifted back by the priming and clipped to
``[0, presentation_duration)``: the first segment is shorter by the priming, the last one ends
where the master ends, and the parts add up to the master's length, tick for tick.
"""

from __future__ import annotations

from manifests.errors import ManifestError
from tonearm.core.model import PackagedRendition

__all__ = ("presented_ticks",)


def presented_ticks(p: PackagedRendition) -> list[int]:
    """Ticks of each segment inside the presentation (HLS EXTINF); they sum to ``presentation_duration``."""
    out = []
    for s in p.segments:
        first = max(s.start - p.priming, 0)
        end = min(s.start + s.duration - p.priming, p.presentation_duration)
        if end <= first:  # only priming or only padding: the packager never cuts such a segment
            raise ManifestError(f"{p.rung.name}: segment {s.index} holds no presented sample "
                                f"(media {s.start}+{s.duration}, priming {p.priming}, "
                                f"presentation {p.presentation_duration} ticks)")
        out.append(end - first)
    return out
