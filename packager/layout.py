"""Cut each encoded rendition into CMAF fragments and write one of two layouts.

- ``segmented``: ``<rung>/init.mp4`` and ``<rung>/seg-00001.m4s`` ... (DASH live
  profile, HLS EXT-X-MAP).
- ``single``: ``single/<rung>.mp4`` = init + sidx + fragments (DASH on-demand
  profile SegmentBase, HLS EXT-X-BYTERANGE).

Segment boundaries are at exact multiples of the segment length in the media
(decode) timeline; a sample belongs to the segment in which it starts (a last
window shorter than 0.1 s on the manifests' timeline joins the one before: see plan).  With
AAC's 1024-sample and Opus's 960-sample frames and a segment length that is a
multiple of 15360 samples, every boundary falls on a frame boundary of every
rendition, so all rungs switch at identical times.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable

from packager import cmaf
from packager.codecs import describe
from packager.demux import Track, read_track
from packager.errors import PackagerError
from packager.protect import Encryptor
from tonearm.core.config import LadderConfig
from tonearm.core.keys import ContentKey
from tonearm.core.layouts import INIT_NAME, LAYOUTS, RESERVED_RUNG_NAMES, SEGMENT_TEMPLATE
from tonearm.core.layouts import layout as layout_named
from tonearm.core.model import EncodedRendition, Loudness, PackagedRendition, SegmentEvent

Listener = Callable[[SegmentEvent], None]
MIN_LAST_SEGMENT = Fraction(1, 10)  # seconds of the manifests' timeline a last segment keeps (see plan)




@dataclass(frozen=True)
class _Cut:
    first: int  # index of the first sample
    stop: int  # one past the last sample
    start: int  # ticks: decode time of the first sample (tfdt)
    duration: int  # ticks


def package(encoded: list[EncodedRendition], ladder: LadderConfig, out_dir: Path, *, layout: str,
            listener: Listener | None = None, loudness: Loudness | None = None,
            key: ContentKey | None = None) -> list[PackagedRendition]:
    """Package every encoded rendition in ``layout`` under ``out_dir``, announcing each segment.

    ``loudness`` (the master's, from ingest) goes into every init segment as a ``ludt`` box.
    ``key`` (a protected asset's) encrypts every rendition with its scheme (packager.protect);
    without one the output is clear CMAF, byte for byte what it was before protection existed.
    """
    if layout not in LAYOUTS:
        raise PackagerError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    clash = sorted({e.rung.name for e in encoded} & RESERVED_RUNG_NAMES)
    if clash:
        raise PackagerError(f"rung name {clash[0]!r} is reserved: it would overwrite the layout's own files")
    crypt = Encryptor(key) if key is not None else None
    return [_package_one(e, ladder, Path(out_dir), layout, listener, loudness, crypt) for e in encoded]


def _package_one(enc: EncodedRendition, ladder: LadderConfig, out_dir: Path, layout: str,
                 listener: Listener | None, loudness: Loudness | None,
                 crypt: Encryptor | None = None) -> PackagedRendition:
    track = read_track(enc.path)
    entry = describe(track.sample_entry)
    seg_ticks = Fraction(ladder.segment_samples * track.timescale, ladder.sample_rate)
    if seg_ticks.denominator != 1 or seg_ticks <= 0:
        raise PackagerError(
            f"{enc.rung.name}: segment length {ladder.segment_duration} s is not a whole number of ticks "
            f"at timescale {track.timescale}"
        )
    cuts = plan(track, int(seg_ticks))
    entry_out = crypt.sample_entry(track.sample_entry) if crypt else track.sample_entry
    init = cmaf.init_segment(sample_entry=entry_out, timescale=track.timescale, priming=track.priming,
                             duration=track.presentation_duration, language=track.language, loudness=loudness,
                             pssh=crypt.pssh() if crypt else b"")
    write = _write_single if layout_named(layout).single_file else _write_segmented
    events, init_uri, extra = write(enc.rung.name, track, cuts, init, out_dir, listener, crypt)
    if crypt:
        extra["protection"] = crypt.info()
    return PackagedRendition(
        rung=enc.rung,
        codecs=entry.codecs,
        timescale=track.timescale,
        sample_rate=entry.sample_rate or track.timescale,
        channels=entry.channels or enc.channels,
        init_uri=init_uri,
        init_size=len(init),
        segments=tuple(events),
        priming=track.priming,
        presentation_duration=track.presentation_duration,
        single_file=layout_named(layout).single_file,
        **extra,
    )


def plan(track: Track, seg_ticks: int) -> list[_Cut]:
    """Group samples by the segment window their start time falls in.

    A last window that starts less than ``MIN_LAST_SEGMENT`` before the master's end on the
    manifests' timeline (``presentation_duration`` ticks after zero: they keep media-time segment
    starts and end where the edit list ends the audio) joins the one before.  Such a window holds
    only samples the encoder's priming pushed past a boundary (a 6.4 s master's AAC rung would
    have a second segment of 1024 ticks starting at 6.4 s), and dash.js and Shaka never fetch a
    segment that starts within a millisecond of the end (measured in Chromium 156), while an HLS
    EXTINF of zero is no segment at all.
    """
    starts = itertools.accumulate(track.durations, initial=0)
    cuts = []
    for _, group in itertools.groupby(zip(range(len(track.durations)), starts), key=lambda p: p[1] // seg_ticks):
        members = list(group)
        first, start = members[0]
        stop = members[-1][0] + 1
        cuts.append(_Cut(first, stop, start, sum(track.durations[first:stop])))
    if len(cuts) > 1 and cuts[-1].start > track.presentation_duration - MIN_LAST_SEGMENT * track.timescale:
        tail = cuts.pop()
        cuts[-1] = _Cut(cuts[-1].first, tail.stop, cuts[-1].start, cuts[-1].duration + tail.duration)
    return cuts


def _payload(src: BinaryIO, track: Track, cut: _Cut) -> bytes:
    """Sample bytes of one cut, read in as few runs as the file layout allows."""
    parts = []
    run_start = track.offsets[cut.first]
    run_len = 0
    for i in range(cut.first, cut.stop):
        off, size = track.offsets[i], track.sizes[i]
        if off != run_start + run_len:
            src.seek(run_start)
            parts.append(src.read(run_len))
            run_start, run_len = off, 0
        run_len += size
    src.seek(run_start)
    parts.append(src.read(run_len))
    data = b"".join(parts)
    if len(data) != sum(track.sizes[cut.first:cut.stop]):
        raise PackagerError(f"{track.path.name}: sample data runs past the end of the file (truncated?)")
    return data


def _fragment(src: BinaryIO, track: Track, cut: _Cut, sequence: int,
              crypt: Encryptor | None = None) -> tuple[bytes, str | None]:
    """One segment's bytes, and its IV when it is encrypted whole (aes-128)."""
    sizes, payload, aux = track.sizes[cut.first:cut.stop], _payload(src, track, cut), None
    if crypt:
        payload, aux = crypt.samples(payload, sizes)
    data = cmaf.fragment(sequence=sequence, base_time=cut.start, durations=track.durations[cut.first:cut.stop],
                         sizes=sizes, payload=payload, aux=aux)
    return crypt.segment(data) if crypt else (data, None)


def _write_segmented(name: str, track: Track, cuts: list[_Cut], init: bytes, out_dir: Path,
                     listener: Listener | None, crypt: Encryptor | None) -> tuple[list[SegmentEvent], str, dict]:
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INIT_NAME).write_bytes(init)
    events = []
    with open(track.path, "rb") as src:
        for seq, cut in enumerate(cuts, start=1):
            data, iv = _fragment(src, track, cut, seq, crypt)
            uri = SEGMENT_TEMPLATE % seq
            (folder / uri).write_bytes(data)
            event = SegmentEvent(rung=name, index=seq, start=cut.start, duration=cut.duration, size=len(data), uri=uri,
                                 iv=iv)
            events.append(event)
            if listener:
                listener(event)
    return events, INIT_NAME, {}


def _write_single(name: str, track: Track, cuts: list[_Cut], init: bytes, out_dir: Path,
                  listener: Listener | None, crypt: Encryptor | None) -> tuple[list[SegmentEvent], str, dict]:
    """init + sidx + fragments in one file; the sidx is written last, into space reserved for it."""
    single = LAYOUTS["single"]
    folder = out_dir / single.folder
    folder.mkdir(parents=True, exist_ok=True)
    uri = single.media_file(name)
    index_size = cmaf.sidx_size(len(cuts))
    events = []
    with open(track.path, "rb") as src, open(folder / uri, "wb") as out:
        out.write(init)
        out.write(bytes(index_size))
        offset = len(init) + index_size
        for seq, cut in enumerate(cuts, start=1):
            data, iv = _fragment(src, track, cut, seq, crypt)
            out.write(data)
            event = SegmentEvent(rung=name, index=seq, start=cut.start, duration=cut.duration, size=len(data),
                                 uri=uri, offset=offset, iv=iv)
            offset += len(data)
            events.append(event)
            if listener:
                listener(event)
        index = cmaf.sidx(timescale=track.timescale, earliest=cuts[0].start,
                          references=[(e.size, e.duration) for e in events])
        out.seek(len(init))
        out.write(index)
    ranges = {"init_range": (0, len(init) - 1), "index_range": (len(init), len(init) + index_size - 1)}
    return events, uri, ranges
