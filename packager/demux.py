"""Read the encoder's MP4: one audio track's sample table, sample entry and edit list.

Handles plain MP4 (moov sample tables: stts, stsc, stsz/stz2, stco/co64) and
fragmented MP4 (moof/traf/trun, 14496-12 8.8).  Sample bytes stay in the file:
only offsets, sizes and durations are kept, so a long master costs a few
megabytes of tables, not its size in memory.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

from packager.boxes import Box, iter_boxes, iter_file_boxes
from packager.errors import BoxError, DemuxError


@dataclass(frozen=True, kw_only=True)
class Track:
    path: Path
    timescale: int  # mdhd timescale: ticks per second of the media timeline
    sample_entry: bytes  # the whole stsd entry box, copied verbatim into our init segment
    offsets: array  # 'Q': file offset of each sample
    sizes: array  # 'I': bytes of each sample
    durations: array  # 'I': ticks of each sample
    priming: int  # ticks: edit list media_time (encoder delay: AAC priming, Opus pre-skip)
    presentation_duration: int  # ticks shown after the priming: the master's duration
    language: bytes = b"\x55\xc4"  # mdhd packed ISO-639-2/T code, "und" by default

    @property
    def media_duration(self) -> int:
        return sum(self.durations)


def read_track(path: Path) -> Track:
    """Parse ``path`` and return its single audio track."""
    try:
        with open(path, "rb") as f:
            top = list(iter_file_boxes(f, load=frozenset({"moov", "moof"})))
    except BoxError as exc:
        raise DemuxError(f"{path.name}: not an ISO base media file ({exc})") from None
    moov = next((b for b in top if b.type == "moov"), None)
    if moov is None:
        raise DemuxError(f"{path.name}: no moov box (not an MP4, or truncated)")
    try:
        return _track(path, moov, [b for b in top if b.type == "moof"])
    except (BoxError, struct.error, IndexError) as exc:
        raise DemuxError(f"{path.name}: malformed MP4 ({exc})") from None


def _track(path: Path, moov: Box, moofs: list[Box]) -> Track:
    mvhd = moov.child("mvhd")
    if mvhd is None:
        raise DemuxError(f"{path.name}: moov has no mvhd")
    version, _, rest = mvhd.full()
    movie_timescale = struct.unpack_from(">I", rest, 16 if version == 1 else 8)[0]

    audio = []
    for trak in (c for c in moov.children() if c.type == "trak"):
        hdlr = trak.child("mdia", "hdlr")
        if hdlr is not None and bytes(hdlr.full()[2][4:8]) == b"soun":
            audio.append(trak)
    if len(audio) != 1:
        raise DemuxError(f"{path.name}: expected exactly one audio track, found {len(audio)}")
    trak = audio[0]
    tkhd_version, _, tkhd = trak.child("tkhd").full()
    track_id = struct.unpack_from(">I", tkhd, 16 if tkhd_version == 1 else 8)[0]
    mdhd = trak.child("mdia", "mdhd")
    version, _, rest = mdhd.full()
    if version == 1:
        timescale = struct.unpack_from(">I", rest, 16)[0]
        language = bytes(rest[28:30])
    else:
        timescale = struct.unpack_from(">I", rest, 8)[0]
        language = bytes(rest[16:18])
    stbl = trak.child("mdia", "minf", "stbl")
    if stbl is None or timescale == 0:
        raise DemuxError(f"{path.name}: audio track has no sample table")
    entry = _sample_entry(path, stbl)

    offsets, sizes, durations = _sample_table(path, stbl)
    if moofs:
        trex = moov.child("mvex", "trex")
        defaults = struct.unpack_from(">IIIII", trex.full()[2], 0) if trex is not None else (track_id, 1, 0, 0, 0)
        _fragments(moofs, track_id, defaults, offsets, sizes, durations)
    if not sizes:
        raise DemuxError(f"{path.name}: the audio track has no samples")

    total = sum(durations)
    priming, shown = _edit(trak, movie_timescale, timescale, total)
    return Track(path=path, timescale=timescale, sample_entry=entry, offsets=offsets, sizes=sizes,
                 durations=durations, priming=priming, presentation_duration=shown, language=language)


def _sample_entry(path: Path, stbl: Box) -> bytes:
    stsd = stbl.child("stsd")
    if stsd is None:
        raise DemuxError(f"{path.name}: no stsd")
    _, _, rest = stsd.full()
    count = struct.unpack_from(">I", rest, 0)[0]
    if count != 1:
        # One decoder configuration per rendition keeps @codecs true for every segment.
        raise DemuxError(f"{path.name}: {count} sample descriptions; the packager needs exactly one")
    first = next(iter_boxes(rest[4:]))
    return bytes(rest[4:4 + first.size])


def _sample_table(path: Path, stbl: Box) -> tuple[array, array, array]:
    durations = array("I")
    stts = stbl.child("stts")
    if stts is not None:
        rest = stts.full()[2]
        (n,) = struct.unpack_from(">I", rest, 0)
        for i in range(n):
            count, delta = struct.unpack_from(">II", rest, 4 + 8 * i)
            durations.extend([delta] * count)

    sizes = array("I")
    if (stsz := stbl.child("stsz")) is not None:
        rest = stsz.full()[2]
        fixed, count = struct.unpack_from(">II", rest, 0)
        if fixed:
            sizes.extend([fixed] * count)
        else:
            sizes.extend(struct.unpack_from(f">{count}I", rest, 8))
    elif (stz2 := stbl.child("stz2")) is not None:
        rest = stz2.full()[2]
        field, count = rest[3], struct.unpack_from(">I", rest, 4)[0]
        data = rest[8:]
        if field == 4:
            sizes.extend((data[i // 2] >> (4 if i % 2 == 0 else 0)) & 0xF for i in range(count))
        elif field in (8, 16):
            fmt = ">" + ("B" if field == 8 else "H") * count
            sizes.extend(struct.unpack_from(fmt, data, 0))
        else:
            raise DemuxError(f"{path.name}: stz2 field size {field} is invalid (14496-12 8.7.3.3)")

    chunk_offsets: list[int] = []
    if (stco := stbl.child("stco")) is not None:
        rest = stco.full()[2]
        (n,) = struct.unpack_from(">I", rest, 0)
        chunk_offsets = list(struct.unpack_from(f">{n}I", rest, 4))
    elif (co64 := stbl.child("co64")) is not None:
        rest = co64.full()[2]
        (n,) = struct.unpack_from(">I", rest, 0)
        chunk_offsets = list(struct.unpack_from(f">{n}Q", rest, 4))

    stsc_entries: list[tuple[int, int, int]] = []
    if (stsc := stbl.child("stsc")) is not None:
        rest = stsc.full()[2]
        (n,) = struct.unpack_from(">I", rest, 0)
        stsc_entries = [struct.unpack_from(">III", rest, 4 + 12 * i) for i in range(n)]

    offsets = array("Q")
    sample = 0
    for i, (first, per_chunk, desc) in enumerate(stsc_entries):
        if desc != 1:
            raise DemuxError(f"{path.name}: samples refer to sample description {desc}; expected 1")
        last = stsc_entries[i + 1][0] - 1 if i + 1 < len(stsc_entries) else len(chunk_offsets)
        for chunk in range(first - 1, last):
            pos = chunk_offsets[chunk]
            for _ in range(per_chunk):
                if sample >= len(sizes):
                    break
                offsets.append(pos)
                pos += sizes[sample]
                sample += 1
    if not (len(offsets) == len(sizes) == len(durations)):
        raise DemuxError(
            f"{path.name}: inconsistent sample tables (stts {len(durations)}, stsz {len(sizes)}, "
            f"stsc/stco {len(offsets)} samples)"
        )
    return offsets, sizes, durations


def _fragments(moofs: list[Box], track_id: int, trex: tuple[int, ...], offsets: array, sizes: array,
               durations: array) -> None:
    """Append the samples of every track fragment (14496-12 8.8.7 and 8.8.8)."""
    _, _, trex_desc, trex_dur, trex_size = trex
    for moof in moofs:
        data_end = moof.offset  # 8.8.7.1: default base of the first traf is the moof
        for traf in (c for c in moof.children() if c.type == "traf"):
            _, flags, rest = traf.child("tfhd").full()
            (tid,) = struct.unpack_from(">I", rest, 0)
            pos = 4
            base = data_end
            if flags & 0x000001:
                (base,) = struct.unpack_from(">Q", rest, pos)
                pos += 8
            elif flags & 0x020000:  # default-base-is-moof
                base = moof.offset
            desc = trex_desc
            if flags & 0x000002:
                (desc,) = struct.unpack_from(">I", rest, pos)
                pos += 4
            dflt_dur, dflt_size = trex_dur, trex_size
            if flags & 0x000008:
                (dflt_dur,) = struct.unpack_from(">I", rest, pos)
                pos += 4
            if flags & 0x000010:
                (dflt_size,) = struct.unpack_from(">I", rest, pos)
                pos += 4
            if tid != track_id:
                continue
            if desc != 1:
                raise DemuxError(f"track fragment at {moof.offset} uses sample description {desc}; expected 1")
            cursor = base
            for trun in (c for c in traf.children() if c.type == "trun"):
                _, tflags, body = trun.full()
                (count,) = struct.unpack_from(">I", body, 0)
                p = 4
                if tflags & 0x001:
                    (doff,) = struct.unpack_from(">i", body, p)
                    cursor = base + doff
                    p += 4
                if tflags & 0x004:
                    p += 4  # first_sample_flags
                for _ in range(count):
                    dur, size = dflt_dur, dflt_size
                    if tflags & 0x100:
                        (dur,) = struct.unpack_from(">I", body, p)
                        p += 4
                    if tflags & 0x200:
                        (size,) = struct.unpack_from(">I", body, p)
                        p += 4
                    if tflags & 0x400:
                        p += 4
                    if tflags & 0x800:
                        p += 4
                    offsets.append(cursor)
                    sizes.append(size)
                    durations.append(dur)
                    cursor += size
            data_end = cursor


def _edit(trak: Box, movie_timescale: int, timescale: int, total: int) -> tuple[int, int]:
    """(priming, presentation duration) in media ticks, from the edit list (14496-12 8.6.6)."""
    elst = trak.child("edts", "elst")
    if elst is None:
        return 0, total
    version, _, rest = elst.full()
    (count,) = struct.unpack_from(">I", rest, 0)
    fmt, step = (">Qq", 16) if version == 1 else (">Ii", 8)
    for i in range(count):
        seg_dur, media_time = struct.unpack_from(fmt, rest, 4 + (step + 4) * i)
        if media_time == -1:
            continue  # an empty edit (initial delay): audio renditions start at zero, so it is dropped
        available = max(0, total - media_time)
        if seg_dur == 0 or movie_timescale == 0:  # 8.6.6.3: zero duration in fragmented files = "all of it"
            return media_time, available
        wanted = seg_dur * timescale // movie_timescale
        # ffmpeg rounds the edit to the movie timescale (ms) but trims the last sample's duration exactly:
        # when both agree within one movie tick, the sample table's figure is the precise one.
        if abs(wanted - available) <= -(-timescale // movie_timescale):
            return media_time, available
        return media_time, min(wanted, available)
    return 0, total
