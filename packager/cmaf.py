"""CMAF / fragmented-MP4 writers: init segment, media fragment, segment index.

Box layouts follow ISO/IEC 14496-12 and the CMAF track constraints
(ISO/IEC 23000-19 7.3): one track, ``mvex/trex`` in the init segment, an
empty sample table, the encoder's sample entry copied byte for byte, and per
fragment ``moof(mfhd, traf(tfhd, tfdt, trun)) + mdat`` with
default-base-is-moof and a trun data_offset, which is what hls.js, Shaka,
dash.js and Safari expect.
"""

from __future__ import annotations

import struct
from typing import Callable, Sequence

from packager.boxes import box, full_box
from packager.loudness import ludt
from tonearm.core.model import Loudness

TRACK_ID = 1
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)

# tfhd / trun flags (14496-12 8.8.7.1, 8.8.8.1)
TFHD_DEFAULT_DURATION = 0x000008
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TRUN_DATA_OFFSET = 0x000001
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200


def init_segment(*, sample_entry: bytes, timescale: int, priming: int, duration: int,
                 language: bytes = b"\x55\xc4", loudness: Loudness | None = None, pssh: bytes = b"") -> bytes:
    """ftyp + moov for one audio track.

    The edit list carries gapless playback (14496-12 8.6.6; Apple's and
    ffmpeg's AAC convention): media_time skips the encoder delay, and
    segment_duration (movie timescale = media timescale here) stops at the
    master's last sample, so the padding of the final frame is not played.
    The master's loudness, when known, is the track's ``udta/ludt`` (see
    packager.loudness), last in the trak as 14496-12's box table (Table 1) lists it.
    ``pssh`` (protected renditions, packager.protect) ends the moov; clear ones have none.
    """
    ftyp = box("ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"dash", b"mp41")
    mvhd = full_box("mvhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0), struct.pack(">IH", 0x10000, 0x0100),
                    bytes(10), _MATRIX, bytes(24), struct.pack(">I", TRACK_ID + 1))
    tkhd = full_box("tkhd", 0, 0x3, struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0), bytes(8),
                    struct.pack(">hhhH", 0, 0, 0x0100, 0), _MATRIX, struct.pack(">II", 0, 0))
    if duration > 0xFFFFFFFF or priming > 0x7FFFFFFF:
        elst = full_box("elst", 1, 0, struct.pack(">IQqhh", 1, duration, priming, 1, 0))
    else:
        elst = full_box("elst", 0, 0, struct.pack(">IIihh", 1, duration, priming, 1, 0))
    mdhd = full_box("mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0), language, bytes(2))
    hdlr = full_box("hdlr", 0, 0, bytes(4), b"soun", bytes(12), b"SoundHandler\0")
    dinf = box("dinf", full_box("dref", 0, 0, struct.pack(">I", 1), full_box("url ", 0, 1)))
    stbl = box(
        "stbl",
        full_box("stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box("stts", 0, 0, bytes(4)),
        full_box("stsc", 0, 0, bytes(4)),
        full_box("stsz", 0, 0, bytes(8)),
        full_box("stco", 0, 0, bytes(4)),
    )
    minf = box("minf", full_box("smhd", 0, 0, bytes(4)), dinf, stbl)
    loudness_box = ludt(loudness)
    udta = box("udta", loudness_box) if loudness_box else b""
    trak = box("trak", tkhd, box("edts", elst), box("mdia", mdhd, hdlr, minf), udta)
    # trex defaults: description 1, no default duration/size, flags 0 = every sample is a sync sample.
    mvex = box("mvex", full_box("trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0)))
    return ftyp + box("moov", mvhd, trak, mvex, pssh)


def fragment(*, sequence: int, base_time: int, durations: Sequence[int], sizes: Sequence[int],
             payload: bytes, aux: Callable[[int], bytes] | None = None) -> bytes:
    """moof + mdat for one segment's samples (one fragment per segment).

    ``aux(at)`` (protected renditions: saiz + saio + senc, packager.protect) follows trun in the
    traf; ``at`` is where it starts, counted from the first byte of the moof.
    """
    flags = TFHD_DEFAULT_BASE_IS_MOOF
    uniform = len(set(durations)) == 1
    tfhd = struct.pack(">I", TRACK_ID)
    if uniform:  # a shared duration goes in tfhd: 4 bytes per sample saved
        flags |= TFHD_DEFAULT_DURATION
        tfhd += struct.pack(">I", durations[0])
        per_sample = struct.pack(f">{len(sizes)}I", *sizes)
        trun_flags = TRUN_DATA_OFFSET | TRUN_SIZE
    else:
        per_sample = b"".join(struct.pack(">II", d, s) for d, s in zip(durations, sizes))
        trun_flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE
    tfdt = full_box("tfdt", 1, 0, struct.pack(">Q", base_time))
    mfhd = full_box("mfhd", 0, 0, struct.pack(">I", sequence))

    def moof(data_offset: int) -> bytes:
        trun = full_box("trun", 0, trun_flags, struct.pack(">Ii", len(sizes), data_offset), per_sample)
        head = full_box("tfhd", 0, flags, tfhd) + tfdt + trun
        extra = aux(8 + len(mfhd) + 8 + len(head)) if aux else b""
        return box("moof", mfhd, box("traf", head, extra))

    size = len(moof(0))
    return moof(size + 8) + box("mdat", payload)


def sidx_size(count: int) -> int:
    return 8 + 4 + 4 + 4 + 8 + 8 + 2 + 2 + 12 * count


def sidx(*, timescale: int, earliest: int, references: Sequence[tuple[int, int]]) -> bytes:
    """A version-1 segment index over consecutive fragments: references are (bytes, ticks).

    first_offset is 0: the first fragment follows the sidx directly.  Every
    audio fragment starts with a sync sample: starts_with_SAP=1, SAP_type=1.
    """
    refs = b"".join(struct.pack(">III", size & 0x7FFFFFFF, dur, 0x90000000) for size, dur in references)
    return full_box("sidx", 1, 0, struct.pack(">IIQQHH", TRACK_ID, timescale, earliest, 0, 0, len(references)), refs)
