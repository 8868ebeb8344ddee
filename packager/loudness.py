"""The ISOBMFF loudness box: the master's EBU R128 figures in every init segment.

Layout (ISO/IEC 14496-12:2015 12.2.7; the MPEG reference software, MPEGGroup/isobmff
``LoudnessBaseAtom.c``, writes the same bytes), in the track's ``udta``
(12.2.7.1: "Container: TrackUserDataBox"; Apple's HLS Authoring Specification 2.19
asks for it in fMP4)::

    udta
      ludt                                   LoudnessBox
        tlou  FullBox version 0, flags 0     TrackLoudnessInfo (a LoudnessBaseBox)
          bit(3)  reserved = 0
          uint(7) downmix_ID = 0             the layout as coded (no downmix applied)
          uint(6) DRC_set_ID = 0             no DRC applied
          int(12) bs_sample_peak_level       0: not present
          int(12) bs_true_peak_level         0: not present
          uint(4) measurement_system_for_TP
          uint(4) reliability_for_TP
          uint(8) measurement_count
          { uint(8) method_definition, uint(8) method_value,
            uint(4) measurement_system, uint(4) reliability } x measurement_count

Field codings are MPEG-D DRC's (ISO/IEC 23003-4 loudnessInfo(), whose tables
14496-12 refers to; as Fraunhofer's FDK decoder reads them, libDRCdec
``_decodeMethodValue`` and ``_readLoudnessInfo``):

- peak levels: ``20 - code / 32`` dB, codes 1..4095 (+19.97 to -107.97 dB, 1/32 dB steps);
- method 1, program loudness (also 2-5): ``-57.75 + code / 4`` LUFS, codes 0..255 (to +6 LUFS);
- method 6, loudness range: ``code / 4`` LU up to 128, ``code / 2 - 32`` up to 204, then ``code - 134``;
- measurement_system: 1 EBU R128, 2 ITU-R BS.1770-4; reliability: 3 accurate (measured).

Each figure is coded to the nearest code; one outside its coding's range is left out
(peak code 0, or no measurement entry) rather than clamped to a wrong value.
"""

from __future__ import annotations

import functools
import struct
from typing import Callable

from packager.boxes import box, full_box
from tonearm.core.model import Loudness

__all__ = ("ludt", "peak_db", "program_lufs", "range_lu", "METHOD_PROGRAM_LOUDNESS", "METHOD_LOUDNESS_RANGE")

METHOD_PROGRAM_LOUDNESS = 1
METHOD_LOUDNESS_RANGE = 6
SYSTEM_EBU_R128 = 1  # ingest measures with ffmpeg's ebur128 filter: R128 integrated loudness and LRA (Tech 3342)
SYSTEM_BS1770_4 = 2  # ... and true peak by BS.1770-4 Annex 2 (4x oversampling)
RELIABILITY_ACCURATE = 3


def peak_db(code: int) -> float:
    return 20.0 - code / 32


def program_lufs(code: int) -> float:
    return -57.75 + code / 4


def range_lu(code: int) -> float:
    if code <= 128:
        return code / 4
    if code <= 204:
        return code / 2 - 32
    return float(code - 134)


def _code(value: float | None, decode: Callable[[int], float], codes: range) -> int | None:
    """The code whose decoded value is nearest ``value``; None when unknown or outside the coding's range."""
    if value is None:
        return None
    lo, hi = sorted((decode(codes[0]), decode(codes[-1])))
    step = abs(decode(codes[1]) - decode(codes[0]))
    if not lo - step / 2 <= value <= hi + step / 2:
        return None
    return min(codes, key=lambda c: abs(decode(c) - value))


@functools.lru_cache(maxsize=64)  # one master's figures, coded once for all its renditions and layouts
def ludt(loudness: Loudness | None) -> bytes:
    """``ludt(tlou)`` for the master's loudness; empty when nothing is known (a silent master)."""
    if loudness is None:
        return b""
    peaks = range(1, 4096)
    sample = _code(loudness.sample_peak_dbfs, peak_db, peaks) or 0
    true = _code(loudness.true_peak_dbtp, peak_db, peaks) or 0
    measurements = [
        (method, code, SYSTEM_EBU_R128, RELIABILITY_ACCURATE)
        for method, code in ((METHOD_PROGRAM_LOUDNESS, _code(loudness.integrated_lufs, program_lufs, range(256))),
                             (METHOD_LOUDNESS_RANGE, _code(loudness.loudness_range_lu, range_lu, range(256))))
        if code is not None
    ]
    if not (sample or true or measurements):
        return b""
    tp_system, tp_reliability = (SYSTEM_BS1770_4, RELIABILITY_ACCURATE) if true else (0, 0)
    payload = struct.pack(">H", (0 << 6) | 0)  # reserved(3), downmix_ID(7), DRC_set_ID(6): all zero
    payload += ((sample << 12) | true).to_bytes(3, "big")
    payload += struct.pack(">BB", (tp_system << 4) | tp_reliability, len(measurements))
    payload += b"".join(struct.pack(">BBB", m, v, (s << 4) | r) for m, v, s, r in measurements)
    return box("ludt", full_box("tlou", 0, 0, payload))
