"""WAV/BWF (RIFF, RF64, BW64) chunk walk: how much audio the header claims.

ffmpeg trusts the ``data`` chunk size: a header claiming *less* than the file
holds decodes "fine" and silently drops the rest, so that case is found here.
Chunks are walked over the whole file (RIFF sizes are often wrong by a pad
byte, so the outer size is not trusted); each chunk is padded to an even
length (Microsoft RIFF spec, "Chunks"; EBU Tech 3306 for RF64's ``ds64``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

_PCM_TAGS = {0x0001, 0x0003}  # WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT
_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = {0, 0xFFFFFFFF}  # streaming writers leave the size open (EBU 3306 uses -1 + ds64)
INFO_KEYS = {b"INAM": "title", b"IART": "artist", b"IPRD": "album", b"ITRK": "track", b"IPRT": "track"}


@dataclass
class WavLayout:
    data_offset: int | None = None
    data_size: int | None = None  # declared; None when the header leaves it open
    block_align: int | None = None
    sample_rate: int | None = None
    pcm: bool = False  # frames = bytes / block_align only holds for PCM and float
    file_size: int = 0
    trailing_after_data: int = 0  # bytes after the data chunk that are not a chunk
    info: dict[str, str] = field(default_factory=dict)

    @property
    def data_end(self) -> int | None:
        if self.data_offset is None or self.data_size is None:
            return None
        return self.data_offset + self.data_size

    @property
    def header_frames(self) -> int | None:
        if not (self.pcm and self.block_align and self.data_size is not None):
            return None
        return self.data_size // self.block_align


def _valid_id(cid: bytes) -> bool:
    return len(cid) == 4 and all(32 <= b < 127 for b in cid)


def read_wav_layout(path: Path) -> WavLayout | None:
    """Walk the chunks of a RIFF/RF64/BW64 WAVE file; None if it is not one."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
            return None
        out = WavLayout(file_size=size)
        ds64_data: int | None = None
        pos = 12
        last_was_data = False
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            body = pos + 8
            if not _valid_id(cid) or (cid != b"data" and body + csize > size):
                break  # not a chunk: audio or junk the previous size did not account for
            if cid == b"ds64" and csize >= 16:
                _riff64, ds64_data = struct.unpack("<QQ", f.read(16))
            elif cid == b"fmt " and csize >= 16:
                tag, _ch, rate, _bps, align = struct.unpack("<HHIIH", f.read(14))
                if tag == _EXTENSIBLE and csize >= 40:
                    f.seek(body + 24)
                    tag = struct.unpack("<H", f.read(2))[0]  # first two bytes of the SubFormat GUID
                out.pcm, out.sample_rate, out.block_align = tag in _PCM_TAGS, rate, align
            elif cid == b"LIST" and csize >= 4 and f.read(4) == b"INFO":
                out.info.update(_info_tags(f, body + 4, body + csize))
            if cid == b"data":
                out.data_offset = body
                if head[:4] != b"RIFF" and csize == 0xFFFFFFFF and ds64_data is not None:
                    csize = ds64_data
                elif csize in _UNKNOWN_SIZES:
                    out.data_size = None
                    return out  # open-ended: the audio runs to the end of the file
                out.data_size = csize
                last_was_data = True
            else:
                last_was_data = False
            pos = body + csize + (csize & 1)
        if pos < size and last_was_data and size - pos > 1:
            out.trailing_after_data = size - pos
        return out


def _info_tags(f, start: int, end: int) -> dict[str, str]:
    tags: dict[str, str] = {}
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        cid, csize = struct.unpack("<4sI", f.read(8))
        if not _valid_id(cid):
            break
        if cid in INFO_KEYS:
            raw = f.read(min(csize, 4096)).split(b"\0", 1)[0]
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                tags.setdefault(INFO_KEYS[cid], text)
        pos += 8 + csize + (csize & 1)
    return tags
