"""Bad encoder output gets a clear error; the box reader and writer agree with each other and the spec."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from fixtures_packager import FFMPEG, RUNGS, encode

from packager import DemuxError, PackagerError, package
from packager.boxes import BoxError, box, full_box, iter_boxes
from packager.codecs import CodecError, describe
from tonearm.core.config import LadderConfig
from tonearm.core.model import EncodedRendition


def _enc(path: Path) -> list[EncodedRendition]:
    return [EncodedRendition(rung=RUNGS[1], path=path, channels=2)]


def test_not_an_mp4_is_rejected_by_name(tmp_path):
    bad = tmp_path / "aac_128k.mp4"
    bad.write_bytes(b"RIFF....WAVEfmt " + bytes(64))
    with pytest.raises(DemuxError, match="aac_128k.mp4"):
        package(_enc(bad), LadderConfig(), tmp_path / "out", layout="segmented")


def test_truncated_mp4_is_rejected(tmp_path):
    good = encode(tmp_path / "full.mp4", RUNGS[1], seconds=1.0)
    cut = tmp_path / "aac_128k.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # mdat size now runs past the end
    with pytest.raises(DemuxError, match="past"):
        package(_enc(cut), LadderConfig(), tmp_path / "out", layout="single")


def test_video_only_file_is_rejected(tmp_path):
    video = tmp_path / "aac_128k.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=0.2", "-c:v", "mpeg4",
                    str(video)], check=True, timeout=60)
    with pytest.raises(DemuxError, match="exactly one audio track, found 0"):
        package(_enc(video), LadderConfig(), tmp_path / "out", layout="segmented")


def test_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(PackagerError, match="layout 'hls'"):
        package([], LadderConfig(), tmp_path, layout="hls")


def test_boxes_round_trip_including_largesize():
    inner = full_box("mfhd", 0, 0, struct.pack(">I", 7))
    data = box("moof", inner) + box("free", b"x" * 3)
    parsed = list(iter_boxes(data))
    assert [(b.type, b.offset, b.size) for b in parsed] == [("moof", 0, 24), ("free", 24, 11)]
    child = parsed[0].child("mfhd")
    assert child.full()[0:2] == (0, 0) and bytes(child.full()[2]) == struct.pack(">I", 7)
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"abcd"  # 14496-12 4.2: size 1 -> 64-bit largesize
    (b,) = iter_boxes(large)
    assert (b.type, b.header, b.size, bytes(b.data)) == ("mdat", 16, 20, b"abcd")


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x10moov", b"\x00\x00\x00\x04abcd", b"\x00\x00"])
def test_malformed_boxes_raise(data):
    with pytest.raises(BoxError):
        list(iter_boxes(data))


def _mp4a(asc: bytes) -> bytes:
    """A minimal mp4a sample entry around an AudioSpecificConfig (14496-14 esds, 14496-1 descriptors)."""
    dsi = bytes([0x05, len(asc)]) + asc
    dcd = bytes([0x04, 13 + len(dsi), 0x40, 0x15]) + bytes(11) + dsi
    esd = bytes([0x03, 3 + len(dcd) + 3, 0, 1, 0]) + dcd + bytes([0x06, 1, 2])
    audio = bytes(6) + struct.pack(">H", 1) + bytes(8) + struct.pack(">HHHHI", 2, 16, 0, 0, 48000 << 16)
    return box("mp4a", audio, full_box("esds", 0, 0, esd))


def test_codecs_string_follows_the_audio_object_type():
    # AAC-LC (AOT 2), 48 kHz (index 3), stereo
    lc = describe(_mp4a(bytes([0x11, 0x90])))
    assert (lc.codecs, lc.channels, lc.family) == ("mp4a.40.2", 2, "aac")
    # HE-AAC (AOT 5), mono
    he = describe(_mp4a(bytes([0x29, 0x88])))
    assert (he.codecs, he.channels) == ("mp4a.40.5", 1)  # channelConfiguration wins over the entry's 2
    # escape: AOT 31 + 6 bits -> 32 + 10 = 42 (USAC)
    entry = describe(_mp4a(bytes([0xF9, 0x46, 0x40])))
    assert entry.codecs == "mp4a.40.42"
    with pytest.raises(CodecError, match="'mp4v'"):
        describe(box("mp4v", bytes(28)))


@pytest.mark.parametrize("name", ["single", "master"])
def test_rung_names_that_collide_with_layout_files_are_rejected(tmp_path, name):
    from tonearm.core.model import Rung

    enc = [EncodedRendition(rung=Rung(name=name, codec="aac", bitrate=128_000), path=tmp_path / "x.mp4", channels=2)]
    with pytest.raises(PackagerError, match=f"'{name}' is reserved"):
        package(enc, LadderConfig(), tmp_path / "out", layout="segmented")
