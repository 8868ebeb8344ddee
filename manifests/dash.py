"""Static DASH MPDs (ISO/IEC 23009-1) for the two layouts.

- segmented: isoff-live profile, SegmentTemplate + SegmentTimeline with the
  exact tick durations of every segment ($Number$ addressing).
- single: isoff-on-demand profile, one BaseURL per Representation with
  SegmentBase@indexRange (the sidx) and Initialization@range.

One AdaptationSet per codec family and channel count (never mixing stereo and
5.1: Dolby/DASH-IF guidance); @segmentAlignment only when the boundaries of
every Representation in the set really coincide.  Timescale = sample rate.

Durations (manifests.timeline): the SegmentTimeline (and the sidx) is the media
timeline, with no presentationTimeOffset, and mediaPresentationDuration is the
master's length (every rung's presentation_duration, the edit list's duration),
not the media timeline's, which also holds the encoder's priming.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from fractions import Fraction
from typing import Sequence

from manifests.bandwidth import dash_bandwidth, min_buffer_time
from manifests.errors import ManifestError
from manifests.hls import seconds
from manifests.loudness import DASH_SCHEME, Normalisation
from manifests.protection import dash_content_protection, dash_namespaces
from manifests.timeline import extinf_ticks
from tonearm.core.codecs import CODECS, codec
from tonearm.core.layouts import SEGMENT_TEMPLATE
from tonearm.core.model import MasterInfo, PackagedRendition

NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
PROFILE_ON_DEMAND = "urn:mpeg:dash:profile:isoff-on-demand:2011"
# 23009-1 5.8.5.4: value = number of channels; dash.js and Shaka read it for every audio codec.
CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"


def duration(value: Fraction) -> str:
    """xs:duration in seconds, e.g. PT6.4S."""
    return f"PT{seconds(value.numerator, value.denominator)}S"


def _family(p: PackagedRendition) -> str:
    return codec(p.rung.codec).family


def _timeline(parent: ET.Element, p: PackagedRendition) -> None:
    """Run-length S elements (23009-1 5.3.9.6): S@r repeats a duration, S@t only where needed."""
    tl = ET.SubElement(parent, "SegmentTimeline")
    expected = None
    for dur, group in itertools.groupby(p.segments, key=lambda s: s.duration):
        run = list(group)
        attrs = {}
        if run[0].start != expected:
            attrs["t"] = str(run[0].start)
        attrs["d"] = str(dur)
        if len(run) > 1:
            attrs["r"] = str(len(run) - 1)
        ET.SubElement(tl, "S", attrs)
        expected = run[-1].start + dur


def presentation_end(renditions: Sequence[PackagedRendition]) -> Fraction:
    """Seconds the presentation lasts: the master's length (the same on every rung; the longest if not)."""
    for p in renditions:
        extinf_ticks(p)  # raises if a last segment does not start before that end (no player would fetch it)
    return max(Fraction(p.presentation_duration, p.timescale) for p in renditions)


def mpd(renditions: Sequence[PackagedRendition], info: MasterInfo, *, layout: str,
        loudness: Normalisation | None = None) -> str:
    """Render the MPD of one layout; URIs are relative to the MPD's own location.

    The loudness figures are a SupplementalProperty of every AdaptationSet
    (its value: manifests.loudness), after AudioChannelConfiguration as the
    schema's RepresentationBaseType orders them, and before Role.  Protected renditions get
    their ContentProtection elements between the two (manifests.protection).
    """
    min_buffer = min_buffer_time(renditions)
    root = ET.Element("MPD", {
        "xmlns": NS,
        "id": info.asset_id,
        "type": "static",
        "profiles": PROFILE_LIVE if layout == "segmented" else PROFILE_ON_DEMAND,
        "mediaPresentationDuration": duration(presentation_end(renditions)),
        "minBufferTime": duration(min_buffer),
    })
    prot = renditions[0].protection if renditions else None
    if prot is not None:
        dash_namespaces(root)
    period = ET.SubElement(root, "Period", {"id": "0", "start": "PT0S"})
    key = lambda p: (codec(p.rung.codec).order, _family(p), p.channels)  # noqa: E731
    for set_id, (_, group) in enumerate(itertools.groupby(sorted(renditions, key=key), key=key)):
        reps = sorted(group, key=lambda p: -dash_bandwidth(p, min_buffer))
        boundaries = {tuple((s.start, s.duration) for s in p.segments) for p in reps}
        aligned = "true" if len(boundaries) == 1 else "false"
        # selectionPriority (ISO/IEC 23009-1 5.3.3.2): players pick their first track by it (dash.js's
        # default initial-track mode); AAC plays everywhere, so it leads, then Opus, then lossless.
        priority = len(CODECS) + 1 - codec(reps[0].rung.codec).order
        attrs = {"id": str(set_id), "contentType": "audio", "mimeType": "audio/mp4", "lang": "und",
                 "selectionPriority": str(priority)}
        if layout == "segmented":
            attrs.update(segmentAlignment=aligned, startWithSAP="1")
        else:
            attrs.update(subsegmentAlignment=aligned, subsegmentStartsWithSAP="1")
        aset = ET.SubElement(period, "AdaptationSet", attrs)
        ET.SubElement(aset, "AudioChannelConfiguration", {"schemeIdUri": CHANNEL_SCHEME, "value": str(reps[0].channels)})
        if prot is not None:
            dash_content_protection(aset, prot)
        if loudness is not None:
            ET.SubElement(aset, "SupplementalProperty", {"schemeIdUri": DASH_SCHEME, "value": loudness.dash_value()})
        ET.SubElement(aset, "Role", {"schemeIdUri": "urn:mpeg:dash:role:2011", "value": "main"})
        for p in reps:
            rep = ET.SubElement(aset, "Representation", {
                "id": p.rung.name, "bandwidth": str(dash_bandwidth(p, min_buffer)), "codecs": p.codecs,
                "audioSamplingRate": str(p.sample_rate),
            })
            if layout == "segmented":
                if any(s.uri != SEGMENT_TEMPLATE % s.index for s in p.segments):
                    raise ManifestError(f"{p.rung.name}: segment names do not follow {SEGMENT_TEMPLATE!r}")
                tpl = ET.SubElement(rep, "SegmentTemplate", {
                    "timescale": str(p.timescale),
                    "initialization": f"{p.rung.name}/{p.init_uri}",
                    "media": f"{p.rung.name}/" + SEGMENT_TEMPLATE.replace("%05d", "$Number%05d$"),
                    "startNumber": str(p.segments[0].index),
                })
                _timeline(tpl, p)
            else:
                if p.index_range is None or p.init_range is None:
                    raise ManifestError(f"{p.rung.name}: single-file rendition without byte ranges")
                ET.SubElement(rep, "BaseURL").text = p.init_uri
                base = ET.SubElement(rep, "SegmentBase", {
                    "timescale": str(p.timescale), "indexRange": "%d-%d" % p.index_range,
                    "indexRangeExact": "true",
                })
                ET.SubElement(base, "Initialization", {"range": "%d-%d" % p.init_range})
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
