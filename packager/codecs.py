"""RFC 6381 ``codecs`` strings and channel counts, read from the sample entry itself.

The string must describe the decoder configuration actually in the init
segment (DASH @codecs, HLS CODECS), so it is derived from the copied stsd
entry, never from the configured rung.

Spellings chosen, per player:
- AAC: ``mp4a.40.<AudioObjectType>`` (RFC 6381 3.3; ISO 14496-3 1.5.1.1): AAC-LC is mp4a.40.2.
- Opus: ``opus``.  The sample entry 4CC is ``Opus`` and the Opus-in-ISOBMFF
  encapsulation spec registers ``Opus``; but dash.js hands @codecs verbatim to
  MediaSource.isTypeSupported, where Chromium and Firefox know ``opus``;
  hls.js (utils/codecs.ts getCodecCompatibleName) and Shaka normalise either
  spelling; Safari 17+ accepts ``opus``.  shaka-packager writes ``opus`` too.
- FLAC: ``fLaC``, the registered 4CC, as Apple's HLS authoring spec lists it;
  hls.js maps it to whatever MSE accepts (``flac``) and Shaka normalises it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from packager.boxes import iter_boxes
from packager.errors import CodecError
from tonearm.core.codecs import CODECS, codec_of_fourcc

# ISO 14496-3 Table 1.19 channelConfiguration -> channel count (0: defined in the PCE).
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}




@dataclass(frozen=True, kw_only=True)
class AudioEntry:
    fourcc: str  # sample entry type: "mp4a", "Opus", "fLaC"
    codecs: str  # RFC 6381 string for manifests
    channels: int
    sample_rate: int
    family: str  # the codec table's name ("aac", "opus", "flac"): one DASH AdaptationSet per family


def describe(entry: bytes) -> AudioEntry:
    """Describe one AudioSampleEntry box (14496-12 12.2.3), header included."""
    fourcc = entry[4:8].decode("latin-1")
    body = memoryview(entry)[8:]
    # SampleEntry: 6 reserved + data_reference_index; AudioSampleEntry: version (QuickTime 0/1/2) ...
    qt_version = struct.unpack_from(">H", body, 8)[0]
    channels, _, _, _, rate = struct.unpack_from(">HHHHI", body, 16)
    sample_rate = rate >> 16
    children_at = 28 + {0: 0, 1: 16, 2: 36}.get(qt_version, 0)
    if qt_version == 2:  # QuickTime SoundDescriptionV2 keeps the real values further on
        sample_rate = int(struct.unpack_from(">d", body, 32)[0])
        channels = struct.unpack_from(">I", body, 40)[0]
    children = {b.type: b for b in iter_boxes(body[children_at:])}

    if fourcc == "mp4a":
        esds = children.get("esds")
        if esds is None:
            raise CodecError("mp4a sample entry without esds")
        oti, aot, chan_cfg = _esds(bytes(esds.data[4:]))
        if oti != 0x40:
            raise CodecError(f"mp4a with objectTypeIndication 0x{oti:02x}; only MPEG-4 Audio (0x40) is supported")
        channels = _AAC_CHANNELS.get(chan_cfg, channels)
        return _entry(fourcc, channels, sample_rate, aot=aot)
    if fourcc == "Opus":
        dops = children.get("dOps")
        if dops is not None:
            channels = dops.data[1]  # OutputChannelCount (Opus in ISOBMFF 4.3.2)
        return _entry(fourcc, channels, sample_rate)
    if fourcc == "fLaC":
        dfla = children.get("dfLa")
        if dfla is not None and len(dfla.data) >= 4 + 4 + 18:
            # STREAMINFO (FLAC-in-ISOBMFF 3.3.2): 20 bits rate, 3 bits channels-1 at byte 10 of the block
            info = bytes(dfla.data[8:26])
            sample_rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
            channels = ((info[12] >> 1) & 0x7) + 1
        return _entry(fourcc, channels, sample_rate)
    if codec_of_fourcc(fourcc) is not None:  # a codec of the table whose entry needs no parsing beyond the header
        return _entry(fourcc, channels, sample_rate)
    known = ", ".join(f"{c.name} ({c.fourcc})" for c in CODECS.values())
    raise CodecError(f"sample entry {fourcc!r} is not one of {known}")


def _entry(fourcc: str, channels: int, sample_rate: int, **fields: int) -> AudioEntry:
    """The entry described with the codec table's CODECS template and family."""
    found = codec_of_fourcc(fourcc)
    assert found is not None, fourcc
    return AudioEntry(fourcc=fourcc, codecs=found.codecs.format(**fields), channels=channels,
                      sample_rate=sample_rate, family=found.family)


def _descriptor(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload size) of an ISO 14496-1 descriptor with expandable size."""
    tag = buf[pos]
    pos += 1
    size = 0
    for _ in range(4):
        b = buf[pos]
        pos += 1
        size = (size << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, pos, size


def _esds(buf: bytes) -> tuple[int, int, int]:
    """(objectTypeIndication, AudioObjectType, channelConfiguration) from an esds payload."""
    tag, pos, _ = _descriptor(buf, 0)
    if tag != 0x03:
        raise CodecError("esds does not start with an ES_Descriptor")
    flags = buf[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2  # dependsOn_ES_ID
    if flags & 0x40:
        pos += 1 + buf[pos]  # URL
    if flags & 0x20:
        pos += 2  # OCR_ES_Id
    tag, pos, _ = _descriptor(buf, pos)
    if tag != 0x04:
        raise CodecError("esds has no DecoderConfigDescriptor")
    oti = buf[pos]
    tag, dsi, dsi_size = _descriptor(buf, pos + 13)
    if tag != 0x05 or dsi_size < 2:
        raise CodecError("esds has no AudioSpecificConfig (DecoderSpecificInfo)")
    bits = int.from_bytes(buf[dsi:dsi + min(dsi_size, 8)], "big")
    nbits = 8 * min(dsi_size, 8)

    def take(n: int) -> int:
        nonlocal nbits
        nbits -= n
        return (bits >> nbits) & ((1 << n) - 1)

    aot = take(5)
    if aot == 31:  # 14496-3 1.6.2.1 GetAudioObjectType(): escape to 32 + 6 bits
        aot = 32 + take(6)
    if take(4) == 0xF:  # samplingFrequencyIndex escape: explicit 24-bit rate
        take(24)
    chan_cfg = take(4)
    return oti, aot, chan_cfg
