"""Which containers a master may be: an allowlist decided from the file's own bytes.

ffmpeg picks a demuxer by probing, and some demuxers read *other* files or
URLs named inside the input: HLS playlists, ``ffconcat`` lists, DASH MPDs,
image sequences, ``.tee`` and more.  A text playlist renamed to ``.wav`` would
then make ingest read (and publish) audio from anywhere on the machine.  So
the container is decided here, before any demuxer or decoder runs, from magic
bytes we check ourselves, and every later open of the master (PyAV and each
ffmpeg run) forces that demuxer and allows only the ``file`` protocol.

Accepted, and nothing else (``not_audio``):

============== ================================================ ==========
container      recognised by                                    demuxer
============== ================================================ ==========
WAV, BWF, RF64 ``RIFF``/``RF64``/``BW64`` ... ``WAVE``            ``wav``
Sony Wave64    the ``riff`` and ``wave`` GUIDs                    ``w64``
FLAC           ``fLaC`` (after an optional ID3v2 tag)            ``flac``
AIFF, AIFF-C   ``FORM`` ... ``AIFF``/``AIFC``                     ``aiff``
MP3            an MPEG audio frame header (after optional ID3v2) ``mp3``
AAC (ADTS)     an ADTS frame header (after optional ID3v2)       ``aac``
MP4, M4A, MOV  an ``ftyp``/``moov``/``mdat``/``free``/``wide`` box    ``mov``
Ogg            ``OggS`` (Vorbis, Opus, FLAC in Ogg)               ``ogg``
CAF            ``caff``                                          ``caf``
Matroska, WebM the EBML magic ``1A 45 DF A3``                    ``matroska``
============== ================================================ ==========

None of these demuxers opens other files (the MP4 demuxer's external data
references are off by default, and the ``file``-only protocol whitelist would
refuse them anyway).  ``tonearm.core.ffmpeg.master_input`` and
``master_open_options`` are the one way any stage opens a master.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

__all__ = ("Container", "CONTAINERS", "sniff")


@dataclass(frozen=True)
class Container:
    name: str  # what we call it
    demuxer: str  # the ffmpeg demuxer forced for every open
    format_name: str = ""  # ffmpeg's full name of that demuxer (what a probe reports), when it differs

    @property
    def reported(self) -> str:
        return self.format_name or self.demuxer


CONTAINERS: dict[str, Container] = {c.name: c for c in (
    Container("wav", "wav"), Container("w64", "w64"), Container("flac", "flac"), Container("aiff", "aiff"),
    Container("mp3", "mp3"), Container("aac", "aac"), Container("mp4", "mov", "mov,mp4,m4a,3gp,3g2,mj2"),
    Container("ogg", "ogg"), Container("caf", "caf"), Container("matroska", "matroska", "matroska,webm"),
)}

_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_W64_WAVE = b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")
_HEAD = 64
MAX_ID3_SKIP = 64 << 20  # an ID3v2 tag claiming more is not believed (its size field is 28 bits: 256 MiB)


def _id3v2_size(head: bytes) -> int | None:
    """Bytes taken by a leading ID3v2 tag (header, body, footer), None if there is none."""
    if len(head) < 10 or not head.startswith(b"ID3") or head[3] == 0xFF or head[4] == 0xFF:
        return None
    size_bytes = head[6:10]
    if any(b & 0x80 for b in size_bytes):
        return None
    size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _mpeg_audio(b: bytes) -> bool:
    """An MPEG-1/2/2.5 layer I-III frame header: sync, a real version, layer, bit rate and rate."""
    if len(b) < 4 or b[0] != 0xFF or (b[1] & 0xE0) != 0xE0:
        return False
    version, layer = (b[1] >> 3) & 3, (b[1] >> 1) & 3
    bitrate, rate = b[2] >> 4, (b[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _adts(b: bytes) -> bool:
    """An ADTS header: 12-bit sync, layer 0, a sampling frequency index ffmpeg knows, a frame length."""
    if len(b) < 7 or b[0] != 0xFF or (b[1] & 0xF6) != 0xF0:
        return False
    freq = (b[2] >> 2) & 0xF
    length = ((b[3] & 3) << 11) | (b[4] << 3) | (b[5] >> 5)
    return freq < 13 and length >= 7


def _after_id3(head: bytes) -> Container | None:
    if head.startswith(b"fLaC"):
        return CONTAINERS["flac"]
    if _mpeg_audio(head):
        return CONTAINERS["mp3"]
    if _adts(head):
        return CONTAINERS["aac"]
    return None


def sniff(f: BinaryIO) -> Container | None:
    """The allowed container ``f`` starts as, or None.  Reads at most two small blocks."""
    f.seek(0)
    head = f.read(_HEAD)
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return CONTAINERS["wav"]
    if len(head) >= 40 and head[:16] == _W64_RIFF and head[24:40] == _W64_WAVE:
        return CONTAINERS["w64"]
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return CONTAINERS["aiff"]
    if head.startswith(b"OggS"):
        return CONTAINERS["ogg"]
    if head.startswith(b"caff"):
        return CONTAINERS["caf"]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return CONTAINERS["matroska"]
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return CONTAINERS["mp4"]
    skip = _id3v2_size(head)
    if skip is not None:
        if skip > MAX_ID3_SKIP:
            return None
        f.seek(skip)
        return _after_id3(f.read(_HEAD))
    return _after_id3(head)
