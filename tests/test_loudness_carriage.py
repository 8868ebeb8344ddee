"""Loudness to the player: masters published by the real pipeline carry their EBU R128 figures and
the normalisation gain in asset.json, in the HLS multivariant playlists (EXT-X-SESSION-DATA, read
by the m3u8 package), in the DASH MPDs (SupplementalProperty, read by mpegdash) and in every init
segment (the ISOBMFF ``ludt``/``tlou`` box, found with pymp4 and decoded here from ISO/IEC
14496-12 12.2.7 and the ISO/IEC 23003-4 codings, independently of the packager's writer).
Neither ffmpeg 5.1 nor 9.0 reads ``ludt`` (ffprobe shows no loudness for it), so the bytes are
decoded by hand."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import m3u8
import pytest
from fixtures_packager import p4_boxes, p4_find
from fixtures_pipeline import pipeline_config, publish
from mpegdash.parser import MPEGDASHParser

from manifests import normalisation
from tonearm.core.config import ConfigError, load
from tonearm.core.model import Loudness

KEYS = ("integrated_lufs", "loudness_range_lu", "true_peak_dbtp", "target_lufs", "gain_db")
DATA_ID = "org.tonearm.loudness."
SCHEME = "urn:org:tonearm:loudness:2026"
LAYOUTS = {"segmented": ("master.m3u8", "manifest.mpd"), "single": ("single/master.m3u8", "single/manifest.mpd")}

# Slow (make test, not make test-fast): masters published through the whole pipeline first.
pytestmark = pytest.mark.slow

# aevalsrc expressions (both channels alike), 48 kHz, 7 s: two segments.
QUIET = "0.1*sin(2*PI*1000*t)*(0.8+0.2*sin(2*PI*0.5*t))"  # about -20 LUFS, peaks near -20 dBTP: loudness limits
PEAKY = "0.05*sin(2*PI*1000*t)+0.93*sin(2*PI*997*t)*between(t,3,3.05)"  # quiet, one 50 ms burst: the peak limits


def _master(path: Path, expr: str | None, seconds: float = 7.0) -> Path:
    source = f"aevalsrc='{expr}|{expr}':s=48000:d={seconds}" if expr else f"anullsrc=r=48000:cl=stereo:d={seconds}"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source,
                    "-c:a", "flac", "-sample_fmt", "s32", str(path)], check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """name -> (published folder, asset.json as published): a quiet master with the lossless rung and a
    target of -16 LUFS, a quiet master with one loud burst (default target), and a silent one."""
    root = tmp_path_factory.mktemp("loudness")
    data = root / "data"
    out = {}
    for name, expr, ladder in (("quiet", QUIET, {"lossless": True, "loudness_target": -16.0}),
                               ("peaky", PEAKY, {}), ("silent", None, {})):
        result = publish(_master(root / f"{name}.flac", expr, 2.0 if expr is None else 7.0),
                         pipeline_config(data, **ladder))
        folder = data / "published" / result.asset_id
        descriptor = json.loads((folder / "asset.json").read_text())
        assert descriptor == json.loads(json.dumps(result.info))
        out[name] = (folder, descriptor)
    return out


def _figures(descriptor: dict) -> dict:
    return {key: descriptor["loudness"][key] for key in KEYS}


# ---- asset.json ------------------------------------------------------------------------------


def test_descriptor_carries_target_and_gain_by_the_rule(published):
    quiet, peaky, silent = (published[n][1]["loudness"] for n in ("quiet", "peaky", "silent"))
    assert quiet["target_lufs"] == -16.0 and peaky["target_lufs"] == silent["target_lufs"] == -14.0
    for lou in (quiet, peaky):
        expected = min(lou["target_lufs"] - lou["integrated_lufs"], -1.0 - lou["true_peak_dbtp"])
        assert lou["gain_db"] == pytest.approx(expected, abs=0.005)
        assert lou["true_peak_dbtp"] + lou["gain_db"] <= -1.0 + 0.005  # never past -1 dBTP after the gain
    # The quiet master reaches its target; the burst's peak holds the other one back (it is cut, not lifted).
    assert quiet["integrated_lufs"] + quiet["gain_db"] == pytest.approx(-16.0, abs=0.005)
    assert peaky["true_peak_dbtp"] > -1.0 and peaky["gain_db"] < 0 < peaky["target_lufs"] - peaky["integrated_lufs"]
    assert silent["silent"] and silent["integrated_lufs"] is None and silent["gain_db"] is None


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_descriptor_declares_each_renditions_hls_bit_rates(published, layout):
    """renditions[].bandwidth / average_bandwidth are the master playlist's BANDWIDTH and AVERAGE-BANDWIDTH
    (of either layout: both cut the same segment bytes), so a page can show them before loading a manifest."""
    for folder, descriptor in published.values():
        playlist = m3u8.load(str(folder / LAYOUTS[layout][0]))
        declared = {Path(v.uri).parent.name if v.uri.endswith("index.m3u8") else Path(v.uri).stem:
                    (v.stream_info.bandwidth, v.stream_info.average_bandwidth) for v in playlist.playlists}
        assert {r["name"]: (r["bandwidth"], r["average_bandwidth"]) for r in descriptor["renditions"]} == declared


# ---- HLS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_hls_session_data_carries_the_descriptors_figures(published, layout):
    for name, (folder, descriptor) in published.items():
        playlist = m3u8.load(str(folder / LAYOUTS[layout][0]))
        session = {s.data_id: s.value for s in playlist.session_data}
        assert all(s.uri is None and s.language is None for s in playlist.session_data)
        known = {key: value for key, value in _figures(descriptor).items() if value is not None}
        assert set(session) == {DATA_ID + key for key in known}, name  # an unknown figure has no tag
        for key, value in known.items():
            assert float(session[DATA_ID + key]) == value, (name, key)  # plain decimals, exactly the descriptor's
        again = m3u8.loads(playlist.dumps()).session_data  # and the m3u8 package writes them back the same
        assert [(s.data_id, s.value) for s in again] == [(s.data_id, s.value) for s in playlist.session_data]


# ---- DASH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_adaptation_set_has_the_loudness_property(published, layout):
    for name, (folder, descriptor) in published.items():
        mpd = MPEGDASHParser.parse(str(folder / LAYOUTS[layout][1]))
        sets = mpd.periods[0].adaptation_sets
        assert len(sets) == (3 if name == "quiet" else 2)  # AAC, Opus (and FLAC)
        for aset in sets:
            (prop,) = [p for p in aset.supplemental_properties or [] if p.scheme_id_uri == SCHEME]
            assert json.loads(prop.value) == _figures(descriptor), (name, aset.id)


def test_the_property_sits_where_the_mpd_schema_allows_it(published):
    """RepresentationBaseType orders AudioChannelConfiguration, ..., SupplementalProperty before the
    AdaptationSet's own Role (ISO/IEC 23009-1 schema): a validating parser must not reject the MPD."""
    import xml.etree.ElementTree as ET

    ns = "{urn:mpeg:dash:schema:mpd:2011}"
    for layout in LAYOUTS.values():
        root = ET.parse(published["peaky"][0] / layout[1]).getroot()
        for aset in root.iter(f"{ns}AdaptationSet"):
            tags = [child.tag.removeprefix(ns) for child in aset]
            assert tags[:3] == ["AudioChannelConfiguration", "SupplementalProperty", "Role"], tags


# ---- init segments ---------------------------------------------------------------------------


def _tlou(init: bytes) -> dict | None:
    """moov/trak/udta/ludt/tlou decoded from its bits (14496-12 12.2.7.2, version 0); None if absent."""
    moov = next(b for b in p4_boxes(init) if b.type == b"moov")
    trak = p4_find(moov, b"trak")
    udta = next((c for c in trak.children if c.type == b"udta"), None)
    if udta is None:
        return None
    raw = bytes(udta.data)  # pymp4 keeps udta raw: its payload is the ludt box
    assert int.from_bytes(raw[:4], "big") == len(raw) and raw[4:8] == b"ludt"
    tlou = raw[8:]
    assert int.from_bytes(tlou[:4], "big") == len(tlou) and tlou[4:8] == b"tlou"
    body = tlou[8:]
    assert body[:4] == bytes(4)  # version 0, flags 0
    ids = int.from_bytes(body[4:6], "big")
    peaks = int.from_bytes(body[6:9], "big")
    out = {"reserved": ids >> 13, "downmix_ID": (ids >> 6) & 0x7F, "DRC_set_ID": ids & 0x3F,
           "sample_peak": peaks >> 12, "true_peak": peaks & 0xFFF, "tp_system": body[9] >> 4,
           "tp_reliability": body[9] & 0xF, "measurements": {}}
    count = body[10]
    assert len(body) == 11 + 3 * count
    for i in range(count):
        method, value, sysrel = body[11 + 3 * i:14 + 3 * i]
        out["measurements"][method] = (value, sysrel >> 4, sysrel & 0xF)
    return out


def _lra(code: int) -> float:  # ISO/IEC 23003-4 loudness range coding
    return code / 4 if code <= 128 else code / 2 - 32 if code <= 204 else code - 134.0


def _inits(folder: Path, descriptor: dict) -> list[tuple[str, bytes]]:
    """Every rendition's init segment: segmented init.mp4 and the single file's init range."""
    out = []
    for r in descriptor["renditions"]:
        out.append((f"{r['name']}/init.mp4", (folder / r["name"] / "init.mp4").read_bytes()))
        single = (folder / "single" / f"{r['name']}.mp4").read_bytes()
        moov = next(b for b in p4_boxes(single) if b.type == b"moov")
        out.append((f"single/{r['name']}.mp4", single[:moov.end]))
    return out


def test_init_segments_carry_the_masters_loudness_box(published):
    """Program loudness to 0.25 LU, loudness range to 0.25 LU, peaks to 1/32 dB: each figure equals the
    descriptor's to within half a step of its coding."""
    for name in ("quiet", "peaky"):
        folder, descriptor = published[name]
        lou = descriptor["loudness"]
        inits = _inits(folder, descriptor)
        assert len(inits) == 2 * len(descriptor["renditions"])
        for where, init in inits:
            box = _tlou(init)
            assert box is not None, where
            assert (box["reserved"], box["downmix_ID"], box["DRC_set_ID"]) == (0, 0, 0)
            assert abs((20 - box["true_peak"] / 32) - lou["true_peak_dbtp"]) <= 1 / 64, where
            assert abs((20 - box["sample_peak"] / 32) - lou["sample_peak_dbfs"]) <= 1 / 64, where
            assert (box["tp_system"], box["tp_reliability"]) == (2, 3)  # ITU-R BS.1770-4, accurate
            program, system, reliability = box["measurements"][1]  # method 1: program loudness
            assert abs((-57.75 + program / 4) - lou["integrated_lufs"]) <= 0.125 and (system, reliability) == (1, 3)
            lra, system, reliability = box["measurements"][6]  # method 6: loudness range
            assert abs(_lra(lra) - lou["loudness_range_lu"]) <= 0.125 and (system, reliability) == (1, 3)
            assert set(box["measurements"]) == {1, 6}


def test_a_silent_master_has_no_loudness_box_and_still_plays(published, tmp_path):
    folder, descriptor = published["silent"]
    assert all(_tlou(init) is None for _, init in _inits(folder, descriptor))
    # ... and the box does not disturb a demuxer: init + first segment of a rung with one probes as before.
    rung = published["peaky"][0] / "aac_128k"
    probe = tmp_path / "probe.mp4"
    probe.write_bytes((rung / "init.mp4").read_bytes() + (rung / "seg-00001.m4s").read_bytes())
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", str(probe)], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stderr == "" and json.loads(out.stdout)["streams"][0]["codec_name"] == "aac"


# ---- the rule, and the setting ---------------------------------------------------------------


@pytest.mark.parametrize(("integrated", "peak", "target", "gain"), [
    (-20.0, -10.0, -14.0, 6.0),  # quiet with headroom: up to the target
    (-20.0, -3.0, -14.0, 2.0),  # the true peak stops it at -1 dBTP
    (-8.0, -0.1, -14.0, -6.0),  # loud: turned down to the target (the peak is then far below -1)
    (-15.0, 0.5, -14.0, -1.5),  # a loud master with inter-sample overs: the peak limits, it is turned down
    (-23.0, -5.0, -23.0, 0.0),  # on target
])
def test_gain_is_the_target_gap_capped_by_the_true_peak(integrated, peak, target, gain):
    n = normalisation(Loudness(integrated_lufs=integrated, loudness_range_lu=4.0, true_peak_dbtp=peak), target)
    assert n.gain_db == gain and math.copysign(1, n.gain_db) == math.copysign(1, gain or 1.0)  # never -0.0
    assert (n.integrated_lufs, n.true_peak_dbtp, n.target_lufs) == (integrated, peak, target)


def test_no_gain_without_a_loudness():
    for lou in (Loudness(integrated_lufs=None, loudness_range_lu=None, true_peak_dbtp=None, silent=True),
                Loudness(integrated_lufs=-20.0, loudness_range_lu=None, true_peak_dbtp=None)):
        n = normalisation(lou, -14.0)
        assert n.gain_db is None
        assert [k for k, _ in n.hls_session_data()] == [DATA_ID + k for k in KEYS if getattr(n, k) is not None]


def test_loudness_target_is_validated(tmp_path):
    assert load(None, env={}).ladder.loudness_target == -14.0
    good = tmp_path / "good.toml"
    good.write_text("[ladder]\nloudness_target = -23\n")  # a TOML integer is a number too
    assert load(good, env={}).ladder.loudness_target == -23.0
    for text, env in (("[ladder]\nloudness_target = -41.0\n", {}), ("[ladder]\nloudness_target = 1.5\n", {}),
                      ('[ladder]\nloudness_target = "-14"\n', {}), ("", {"TONEARM_LADDER_LOUDNESS_TARGET": "loud"})):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=r"^\[ladder\] loudness_target.*expected a number >= -40 and <= 0"):
            load(bad, env=env)
    assert load(None, env={"TONEARM_LADDER_LOUDNESS_TARGET": "-16.5"}).ladder.loudness_target == -16.5
