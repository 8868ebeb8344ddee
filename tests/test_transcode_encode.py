"""The transcode stage against real ffmpeg binaries (Debian 5.1 and imageio-ffmpeg 9.0):
one process per master, the right codec/rate/layout per rung, the channel rule, the
resampler's quality, plain MP4 outputs stripped of metadata, and typed failures."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fixtures_transcode import (
    decode,
    ffprobe_json,
    make_master,
    master_info,
    sine_snr_db,
    tone_level_db,
    top_level_boxes,
)

import transcode.encode
from tonearm.core.config import LadderConfig
from tonearm.core.ffmpeg import FfmpegError, FfmpegInfo, FfmpegTimeout
from tonearm.core.model import Rung
from transcode import MissingEncoder, build_command, encode_ladder
from transcode.channels import CENTER_MIX, SURROUND_MIX

FULL = LadderConfig(lossless=True)
CODEC_NAMES = {"aac": "aac", "opus": "opus", "flac": "flac"}
AAC_FRAME, OPUS_FRAME = 1024, 960


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every argv the stage hands to the (real) runner."""
    seen: list[list[str]] = []
    real = transcode.encode.run

    def counting(argv, **kw):
        seen.append(list(argv))
        return real(argv, **kw)

    monkeypatch.setattr(transcode.encode, "run", counting)
    return seen


def ffprobe_packets(path: Path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts,duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["packets"]


def _audio(path: Path) -> dict:
    return next(s for s in ffprobe_json(path)["streams"] if s["codec_type"] == "audio")


def test_full_ladder_in_one_process(tmp_path: Path, ffmpeg_bin: FfmpegInfo, runs: list) -> None:
    master = make_master(tmp_path / "m.flac", seconds=3, rate=44100, channels=2,
                         tags={"title": "Secret title", "artist": "Someone"}, artwork=True)
    info = master_info(master)
    out = encode_ladder(master, info, FULL, tmp_path / "enc", ffmpeg=ffmpeg_bin, timeout=120)

    assert len(runs) == 1 and runs[0][0] == ffmpeg_bin.path
    assert runs[0].count("-i") == 1  # decoded once
    assert [r.rung for r in out] == list(FULL.all_rungs)
    for r in out:
        assert r.path == tmp_path / "enc" / f"{r.rung.name}.mp4"
        probe = ffprobe_json(r.path)
        assert [s["codec_type"] for s in probe["streams"]] == ["audio"]  # artwork and video dropped
        a = probe["streams"][0]
        assert a["codec_name"] == CODEC_NAMES[r.rung.codec]
        assert int(a["sample_rate"]) == 48000 and int(a["channels"]) == r.channels == 2
        tags = {**probe["format"].get("tags", {}), **a.get("tags", {})}
        assert not {"title", "artist", "encoder"} & {k.lower() for k in tags}, tags
        boxes = top_level_boxes(r.path)
        assert boxes[0] == "ftyp" and "moov" in boxes and "mdat" in boxes
        assert "moof" not in boxes and "sidx" not in boxes  # plain MP4: the packager fragments it
        if r.rung.bitrate:  # a lossy rung lands near its nominal rate (mdat bytes over duration)
            rate = r.path.stat().st_size * 8 / info.duration_s
            assert 0.6 * r.rung.bitrate < rate < 1.4 * r.rung.bitrate, (r.rung.name, rate)


@pytest.mark.parametrize("rate,bits", [(44100, 16), (96000, 24),  # make test-fast: a CD-rate and a hi-res master
                                       pytest.param(8000, 16, marks=pytest.mark.slow),
                                       pytest.param(48000, 24, marks=pytest.mark.slow)])
def test_durations_and_lossless_depth(tmp_path: Path, ffmpeg_bin: FfmpegInfo, rate: int, bits: int) -> None:
    seconds = 2.0
    master = make_master(tmp_path / "m.flac", seconds=seconds, rate=rate, channels=2,
                         sample_fmt="s16" if bits == 16 else "s32")
    info = master_info(master)
    assert info.bits_per_sample == bits
    out = {r.rung.codec + str(r.rung.bitrate): r for r in
           encode_ladder(master, info, FULL, tmp_path / "enc", ffmpeg=ffmpeg_bin, timeout=120)}
    expected = round(seconds * 48000)
    for key, r in out.items():
        frames = len(decode(r.path, channels=2))
        frame = AAC_FRAME if r.rung.codec == "aac" else OPUS_FRAME if r.rung.codec == "opus" else 0
        # FLAC is exact. AAC/Opus decoders drop the priming via the edit list; some versions
        # keep the last frame's padding, never more than one frame.
        assert expected <= frames <= expected + frame, (key, frames, expected)
        # every frame but the last lasts exactly one codec frame: no +-1 tick timestamp jitter
        # from the resampler reaches the MP4 (it would move the packager's segment boundaries)
        durations = [p["duration"] for p in ffprobe_packets(r.path)]
        assert len(set(durations[1:-1])) == 1, (key, sorted(set(durations)))
        # frames tile the 15360-sample grid, so every rung can be cut at the same instants
        assert 15360 % int(durations[1]) == 0, (key, durations[1])
    flac = _audio(out["flacNone"].path)
    assert flac["sample_fmt"] == ("s16" if bits == 16 else "s32")
    assert int(flac.get("bits_per_raw_sample") or 16) == bits


def test_channel_rule_51(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    """5.1: lossy rungs get the ITU downmix (C and surrounds at -3 dB, LFE dropped,
    normalised so nothing clips); the lossless rung keeps all six channels."""
    freqs = (440.0, 550.0, 660.0, 60.0, 770.0, 880.0)  # FL FR FC LFE BL BR
    master = make_master(tmp_path / "m51.flac", seconds=2, rate=48000, channels=6, freqs=freqs, sample_fmt="s32")
    info = master_info(master)
    assert info.channels == 6
    out = {r.rung.name: r for r in encode_ladder(master, info, FULL, tmp_path / "enc", ffmpeg=ffmpeg_bin,
                                                 timeout=120)}
    assert {n: r.channels for n, r in out.items()} == {"aac_256k": 2, "aac_128k": 2, "aac_64k": 2,
                                                        "opus_96k": 2, "flac": 6}

    src = 20 * np.log10(0.4)
    norm = 20 * np.log10(1 + CENTER_MIX + SURROUND_MIX)  # rematrix_maxval=1 scales each row to sum 1
    for name in ("aac_256k", "opus_96k"):
        x = decode(out[name].path, channels=2)
        left, right = x[:, 0], x[:, 1]
        for ch, own, other_side in ((left, 440.0, 550.0), (right, 550.0, 440.0)):
            assert tone_level_db(ch, own) == pytest.approx(src - norm, abs=0.5)
            assert tone_level_db(ch, other_side) < src - 50  # no crosstalk between sides
            assert tone_level_db(ch, 660.0) == pytest.approx(src - norm + 20 * np.log10(CENTER_MIX), abs=0.5)
            assert tone_level_db(ch, 60.0) < src - 40  # LFE dropped
        assert tone_level_db(left, 770.0) == pytest.approx(src - norm + 20 * np.log10(SURROUND_MIX), abs=0.5)
        assert tone_level_db(right, 770.0) < src - 50
        assert tone_level_db(right, 880.0) == pytest.approx(src - norm + 20 * np.log10(SURROUND_MIX), abs=0.5)
        assert np.max(np.abs(x)) <= 1.0

    x = decode(out["flac"].path, channels=6)
    for i, f in enumerate(freqs):  # every channel carries exactly its own tone
        assert sine_snr_db(x[:, i], f) > 100, (i, f)


def test_mono_stays_mono_and_forced_counts(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    master = make_master(tmp_path / "mono.wav", seconds=1.5, rate=22050, channels=1, codec="pcm_s16le")
    info = master_info(master)
    ladder = LadderConfig(rungs=(Rung(name="a", codec="aac", bitrate=64_000),
                                 Rung(name="o", codec="opus", bitrate=32_000),
                                 Rung(name="up", codec="aac", bitrate=96_000, channels=2)), lossless=True)
    out = {r.rung.name: r for r in encode_ladder(master, info, ladder, tmp_path / "enc", ffmpeg=ffmpeg_bin,
                                                 timeout=120)}
    for name, want in {"a": 1, "o": 1, "flac": 1, "up": 2}.items():
        assert out[name].channels == want == int(_audio(out[name].path)["channels"]), name
    up = decode(out["up"].path, channels=2)
    side = np.sqrt(np.mean((up[:, 0] - up[:, 1]) ** 2) / np.mean(up[:, 0] ** 2))
    assert 20 * np.log10(side) < -30  # the same mono signal on both sides (up to AAC's coding noise)
    assert tone_level_db(up[:, 0], 440.0) == pytest.approx(20 * np.log10(0.4 * CENTER_MIX), abs=0.5)


@pytest.mark.parametrize("resampler", ["soxr", pytest.param("swr", marks=pytest.mark.slow)])  # soxr: the default
def test_resampler_quality(tmp_path: Path, ffmpeg_bin: FfmpegInfo, resampler: str) -> None:
    """A 1 kHz tone plus an ultrasonic 30 kHz tone at 96 kHz, and 997 Hz at 44.1 kHz: after
    resampling to 48 kHz the lossless rung holds the audible tone and nothing else, down to
    the 24-bit floor. ffmpeg's default swr (32 taps) only reaches ~112 dB here."""
    ladder = LadderConfig(rungs=(), lossless=True)
    cases = [(96000, "0.5*sin(2*PI*1000*t)+0.25*sin(2*PI*30000*t)", 1000.0),
             (44100, "0.5*sin(2*PI*997*t)", 997.0)]
    for rate, expr, tone in cases:
        master = tmp_path / f"m{rate}.flac"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"aevalsrc={expr}:s={rate}:d=2",
                        "-c:a", "flac", "-sample_fmt", "s32", str(master)], check=True, timeout=60)
        info = master_info(master)
        out_dir = tmp_path / f"enc{rate}"
        out_dir.mkdir()
        argv, (flac,) = build_command(master, info, ladder, out_dir, ffmpeg=ffmpeg_bin, resampler=resampler)
        assert f"resampler={resampler}" in " ".join(argv)
        transcode.encode.run(argv, timeout=120)
        assert sine_snr_db(decode(flac.path, channels=1)[:, 0], tone) > 125


def test_soxr_is_detected_on_both_binaries(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    from transcode.resampler import has_soxr

    configuration = subprocess.run([ffmpeg_bin.path, "-hide_banner", "-version"],
                                                 capture_output=True, text=True).stdout
    assert has_soxr(ffmpeg_bin.path) == ("--enable-libsoxr" in configuration)
    master = make_master(tmp_path / "m.flac", seconds=0.5)
    argv, _ = build_command(master, master_info(master), FULL, tmp_path, ffmpeg=ffmpeg_bin)
    assert ("resampler=soxr" in " ".join(argv)) == has_soxr(ffmpeg_bin.path)


def test_same_master_same_bytes(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    master = make_master(tmp_path / "m.flac", seconds=1.0)
    info = master_info(master)
    first = encode_ladder(master, info, FULL, tmp_path / "a", ffmpeg=ffmpeg_bin, timeout=60)
    second = encode_ladder(master, info, FULL, tmp_path / "b", ffmpeg=ffmpeg_bin, timeout=60)
    for x, y in zip(first, second):
        assert x.path.read_bytes() == y.path.read_bytes(), x.rung.name


def test_missing_encoder_is_a_typed_error_before_running(tmp_path: Path, ffmpeg_bin: FfmpegInfo, runs: list) -> None:
    master = make_master(tmp_path / "m.flac", seconds=0.5)
    no_opus = dataclasses.replace(ffmpeg_bin, encoders=ffmpeg_bin.encoders - {"libopus"})
    with pytest.raises(MissingEncoder, match="libopus") as exc:
        encode_ladder(master, master_info(master), FULL, tmp_path / "enc", ffmpeg=no_opus, timeout=60)
    assert exc.value.code == "ffmpeg_missing_encoder"
    assert runs == []


def test_corrupt_master_gives_ffmpeg_error_with_stderr(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    master = make_master(tmp_path / "m.flac", seconds=0.5)
    info = master_info(master)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + os.urandom(2000))
    with pytest.raises(FfmpegError) as exc:
        encode_ladder(bad, info, FULL, tmp_path / "enc", ffmpeg=ffmpeg_bin, timeout=60)
    assert exc.value.tail() and exc.value.returncode not in (0, None)


@pytest.mark.slow  # waits out an encoder timeout
def test_timeout_kills_the_encoder(tmp_path: Path, ffmpeg_bin: FfmpegInfo, runs: list) -> None:
    master = make_master(tmp_path / "long.flac", seconds=120, rate=48000)
    with pytest.raises(FfmpegTimeout):
        encode_ladder(master, master_info(master), FULL, tmp_path / "enc", ffmpeg=ffmpeg_bin, timeout=0.3)
    # the whole process group is gone: no encoder still writes into the staging dir
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, str(tmp_path / "enc"))]
    assert leftovers == []


def _cmdline_has(proc: Path, needle: str) -> bool:
    try:
        return needle in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_rung_rate_must_match_ladder(tmp_path: Path, ffmpeg_bin: FfmpegInfo) -> None:
    master = make_master(tmp_path / "m.flac", seconds=0.5)
    ladder = LadderConfig(rungs=(Rung(name="x", codec="aac", bitrate=64_000, sample_rate=44100),))
    with pytest.raises(ValueError, match="resampled once"):
        build_command(master, master_info(master), ladder, tmp_path, ffmpeg=ffmpeg_bin)
