"""Protected CMAF, checked by parsers and a decryptor that are not ours.

- pymp4 reads the init segments (``enca``, ``sinf``/``frma``/``schm``/``schi``/``tenc``, ``pssh``)
  and the fragments (``trun``, ``saiz``, ``saio``); ``senc`` is read with ``construct`` (pymp4 1.4's
  own senc struct evaluates its subsample flag in the wrong context and cannot parse any senc).
- imageio-ffmpeg's ffmpeg 9 decrypts ``cenc`` and ``cbcs`` renditions with ``-decryption_key`` to
  exactly the PCM of the clear asset's same rendition (Debian's ffmpeg 5.1 cannot decrypt
  multi-fragment cenc: /work/shared/notes/service-design.md); a wrong key does not.
- AES-128 HLS: ffmpeg plays the signed media playlist, fetching ``hls.key`` from the origin under
  the token, to the same PCM; without the token the key is 403 and nothing decodes.
- Clear assets are byte for byte what the code before protection wrote: the same encoder output
  packaged and described by this tree and by the last commit without protection (git archive).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import construct as C
import imageio_ffmpeg
import m3u8
import numpy as np
import pytest
from fixtures_protection import Protected
from pymp4.parser import Box

from packager.boxes import iter_boxes

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # the session's protected assets: whole-pipeline runs

COMMON = "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"
WIDEVINE = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
BEFORE_PROTECTION = "a423c2524f7ec5e1131c7b37448261b5da54d714"  # the last commit before content protection
RUNGS = {"aac_128k": b"mp4a", "opus_96k": b"Opus"}

SENC = C.Struct(  # ISO/IEC 23001-7 7.2.1, audio: no subsamples (flags 0)
    "size" / C.Int32ub, "type" / C.Const(b"senc"), "version" / C.Int8ub, "flags" / C.Int24ub,
    "sample_count" / C.Int32ub, "ivs" / C.Array(C.this.sample_count, C.Bytes(C.this._.iv_size)),
)


def walk(box) -> list:
    """Every box in a pymp4 tree (pymp4 lists a sample entry's children beside the stsd)."""
    out = [box]
    for child in box.get("children") or []:
        out += walk(child)
    return out


def boxes_of(data: bytes) -> list:
    found = []
    pos = 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos)[0]
        found += walk(Box.parse(data[pos:pos + size]))
        pos += size
    return found


def first(boxes: list, typ: bytes):
    return next(b for b in boxes if b.type == typ)


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
@pytest.mark.parametrize("rung", sorted(RUNGS))
def test_init_segment_protection_boxes(protected: Protected, scheme: str, rung: str) -> None:
    key = protected.key(scheme)
    assert protected.assets[scheme]["protection"] == {"scheme": scheme, "kid": key.kid_hex}
    init = (protected.published(scheme) / rung / "init.mp4").read_bytes()
    boxes = boxes_of(init)
    stsd = first(boxes, b"stsd")
    assert [e.format for e in stsd.entries] == [b"enca"]
    assert first(boxes, b"frma").original_format == RUNGS[rung]
    schm = first(boxes, b"schm")
    assert schm.scheme_type == scheme.encode() and schm.scheme_version == 0x10000
    tenc = first(boxes, b"tenc")
    assert tenc.is_encrypted == 1 and tenc.key_ID.bytes == key.kid
    if scheme == "cenc":
        assert tenc.version == 0 and tenc.iv_size == 8
    else:  # cbcs: version 1, no pattern for audio (0:0), a 16-byte constant IV
        assert tenc.version == 1 and tenc.iv_size == 0
        assert (tenc.default_byte_blocks.crypt, tenc.default_byte_blocks.skip) == (0, 0)
        assert bytes(tenc.constant_iv) == key.iv
    pssh = {str(b.system_ID): b for b in boxes if b.type == b"pssh"}
    assert set(pssh) == {COMMON, WIDEVINE}
    assert pssh[COMMON].version == 1 and [k.bytes for k in pssh[COMMON].key_IDs] == [key.kid]
    wv = bytes(pssh[WIDEVINE].init_data)  # WidevinePsshData: key_id (2) and protection_scheme (9)
    assert wv[:2] == b"\x12\x10" and wv[2:18] == key.kid and wv[18] == 0x48
    assert key.key not in init and key.key.hex().encode() not in init


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
def test_fragments_carry_senc_saiz_saio(protected: Protected, scheme: str) -> None:
    segments = sorted(protected.published(scheme).glob("*/seg-*.m4s"))
    assert len(segments) >= 8
    iv_size = 8 if scheme == "cenc" else 0
    all_ivs = []
    for seg in segments:
        data = seg.read_bytes()
        moof = Box.parse(data[:struct.unpack_from(">I", data)[0]])
        traf = first(walk(moof), b"traf")
        kinds = [c.type for c in traf.children]
        assert kinds[:3] == [b"tfhd", b"tfdt", b"trun"] and set(kinds[3:]) == {b"saiz", b"saio"}, kinds
        trun, saiz, saio = (first(traf.children, t) for t in (b"trun", b"saiz", b"saio"))
        # data_offset: the first mdat byte, right after the grown moof
        mdat = next(b for b in iter_boxes(data) if b.type == "mdat")
        assert trun.data_offset == mdat.offset + mdat.header
        assert saiz.sample_count == trun.sample_count
        if iv_size:
            assert saiz.default_sample_info_size == iv_size
        else:
            assert saiz.default_sample_info_size == 0 and list(saiz.sample_info_sizes) == [0] * trun.sample_count
        # saio points at senc's first per-sample record (offset from the moof: default-base-is-moof)
        assert len(saio.offsets) == 1
        at = data.index(b"senc") - 4
        assert saio.offsets[0] == at + 16
        senc = SENC.parse(data[at:], iv_size=iv_size)
        assert senc.flags == 0 and senc.sample_count == trun.sample_count
        assert senc.size == 16 + iv_size * trun.sample_count
        all_ivs += senc.ivs
    if scheme == "cenc":  # a fresh IV per sample: none repeats across the asset
        assert len(set(all_ivs)) == len(all_ivs) > 1000


def ffmpeg9() -> str:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout
    assert version.startswith("ffmpeg version n9") or " 9." in version.split("\n")[0], version[:80]
    return exe


def decode(args: list[str], timeout: float = 60) -> np.ndarray:
    proc = subprocess.run([ffmpeg9(), "-v", "error", *args, "-f", "s16le", "-ac", "2", "-ar", "48000", "-"],
                          capture_output=True, timeout=timeout)
    return np.frombuffer(proc.stdout, dtype=np.int16)


def rendition_file(protected: Protected, scheme: str, rung: str, tmp_path: Path) -> Path:
    folder = protected.published(scheme) / rung
    out = tmp_path / f"{scheme}-{rung}.mp4"
    out.write_bytes((folder / "init.mp4").read_bytes() + b"".join(p.read_bytes() for p in sorted(folder.glob("seg-*"))))
    return out


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
@pytest.mark.parametrize("rung", sorted(RUNGS))
def test_ffmpeg_decrypts_to_the_clear_audio(protected: Protected, tmp_path: Path, scheme: str, rung: str) -> None:
    clear = decode(["-i", str(rendition_file(protected, "none", rung, tmp_path))])
    enc = rendition_file(protected, scheme, rung, tmp_path)
    key = protected.key(scheme)
    plain = decode(["-decryption_key", key.key.hex(), "-i", str(enc)])
    assert len(clear) > 48000 * 2 * 10  # 12 s of stereo
    assert np.array_equal(plain, clear)  # the same encoder output, decrypted: sample for sample
    wrong = decode(["-decryption_key", bytes(16).hex(), "-i", str(enc)])  # negative control
    assert not np.array_equal(wrong[:len(clear)], clear)
    undecrypted = decode(["-i", str(enc)])
    assert not np.array_equal(undecrypted[:len(clear)], clear)


def test_aes128_hls_through_the_origin(protected: Protected) -> None:
    asset = protected.assets["aes-128"]
    assert set(asset["manifests"]) == {"hls", "hls_single"}  # no DASH for whole-segment encryption
    assert not (protected.published("aes-128") / "manifest.mpd").exists()
    rel = "aac_128k/index.m3u8"
    playlist = m3u8.loads((protected.published("aes-128") / rel).read_text())
    ivs = [s.key.iv for s in playlist.segments]
    assert all(s.key.method == "AES-128" for s in playlist.segments) and len(set(ivs)) == len(ivs)
    assert playlist.segment_map[0].uri == "init.mp4"
    clear = decode(["-i", str(protected.published("none") / rel)])
    signed = protected.signed("aes-128", rel)
    heard = decode(["-allowed_extensions", "ALL", "-i", signed])
    assert len(clear) > 48000 * 2 * 10 and np.array_equal(heard, clear)
    unsigned = f"{protected.base}/assets/{asset['id']}/{rel}"  # the key URI then has no token: 403
    assert len(decode(["-allowed_extensions", "ALL", "-i", unsigned])) < len(clear) // 10


def test_cenc_is_dash_only_and_cbcs_both(protected: Protected) -> None:
    assert set(protected.assets["cenc"]["manifests"]) == {"dash", "dash_single"}
    assert set(protected.assets["cbcs"]["manifests"]) == {"hls", "dash", "hls_single", "dash_single"}
    assert "protection" not in protected.assets["none"]
    media = (protected.published("cbcs") / "aac_128k/index.m3u8").read_text()
    assert media.count("#EXT-X-KEY:METHOD=SAMPLE-AES") == 2 and 'KEYFORMAT="org.w3.clearkey"' in media
    assert media.index("#EXT-X-KEY") < media.index("#EXT-X-MAP")
    master = (protected.published("cbcs") / "master.m3u8").read_text()
    assert master.count("#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES") == 2
    mpd = (protected.published("cbcs") / "manifest.mpd").read_text()
    kid = protected.key("cbcs").kid_uuid
    assert f'value="cbcs" cenc:default_KID="{kid}"' in mpd
    for system in ("e2719d58-a985-b3c9-781a-b030af78d30e", WIDEVINE, "9a04f079-9840-4286-ab92-e65be0885f95"):
        assert f"urn:uuid:{system}" in mpd


def test_no_key_in_published_files(protected: Protected) -> None:
    """The content key never reaches public storage in any spelling; key records and the master
    key live outside published/, readable by their owner only."""
    for scheme in ("cbcs", "cenc", "aes-128"):
        key = protected.key(scheme)
        spellings = [key.key, key.key.hex().encode(), key.key.hex().upper().encode(), base64.b64encode(key.key),
                     base64.urlsafe_b64encode(key.key).rstrip(b"=")]
        for path in protected.published(scheme).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(s in data for s in spellings), path
    keys = protected.data / "keys"
    assert (keys / "master.key").stat().st_mode & 0o777 == 0o600
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys.glob("*.json"))
    assert keys.stat().st_mode & 0o077 == 0


SCRIPT = r"""
import hashlib, json, sys
from pathlib import Path
from ingest import inspect
from manifests import write_manifests
from packager import package
from tonearm.core.config import Config
from tonearm.core.ffmpeg import locate
from tonearm.core.model import EncodedRendition
cfg = Config()
master, encoded, out = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
ff = locate()
info = inspect(master, asset_id="0" * 64, source_name="m.flac", ffmpeg=ff, timeout=60, limits=cfg.ingest)
rungs = {r.name: r for r in cfg.ladder.all_rungs}
enc = [EncodedRendition(rung=rungs[n], path=Path(p), channels=2) for n, p in encoded.items()]
layouts = {lay: package(enc, cfg.ladder, out, layout=lay, loudness=info.loudness) for lay in cfg.ladder.layouts}
write_manifests(out, layouts, info, loudness_target=cfg.ladder.loudness_target)
import packager as _p
assert Path(_p.__file__).resolve().is_relative_to(Path(sys.argv[4]).resolve()), _p.__file__
print(json.dumps({str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(out.rglob("*")) if p.is_file()}))
"""


def test_clear_assets_are_byte_for_byte_unchanged(tmp_path: Path) -> None:
    """The same encodes packaged by this tree (scheme none) and by the tree before protection."""
    import json

    from fixtures_players import make_tone_master

    from ingest import inspect
    from tonearm.core.config import Config
    from tonearm.core.ffmpeg import locate
    from transcode import encode_ladder

    repo = Path(__file__).resolve().parents[1]
    have = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{BEFORE_PROTECTION}^{{commit}}"],
                          capture_output=True, timeout=30)
    if have.returncode != 0:
        pytest.skip(f"commit {BEFORE_PROTECTION[:10]} is not in this clone (shallow?): nothing to compare with")
    before = tmp_path / "before"
    before.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE_PROTECTION, "tonearm", "ingest", "transcode",
                              "packager", "manifests"], capture_output=True, timeout=60, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True, timeout=60)
    master = make_tone_master(tmp_path / "m.flac", title="bytes", seconds=8.0)
    cfg = Config()
    ff = locate()
    info = inspect(master, asset_id="0" * 64, source_name="m.flac", ffmpeg=ff, timeout=60, limits=cfg.ingest)
    encoded = encode_ladder(master, info, cfg.ladder, tmp_path / "enc", ffmpeg=ff, timeout=120)
    names = json.dumps({e.rung.name: str(e.path) for e in encoded})

    def digests(tree: Path, out: Path) -> dict[str, str]:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(master), names, str(out), str(tree)], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    now, then = digests(repo, tmp_path / "now"), digests(before, tmp_path / "then")
    assert len(now) > 20 and now == then
    # and the control: a protected packaging of the same encodes differs in every media file
    from packager import package as package_now
    from tonearm.core.keys import open_keystore

    key = open_keystore(tmp_path / "keys").key_for("1" * 64, "cbcs")
    prot = package_now(encoded, cfg.ladder, tmp_path / "prot", layout="segmented", key=key)
    for p in prot:
        got = hashlib.sha256((tmp_path / "prot" / p.rung.name / "init.mp4").read_bytes()).hexdigest()
        assert got != now[f"{p.rung.name}/init.mp4"]
