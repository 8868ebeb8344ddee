"""Accepted masters: every supported format decodes, measures and reads back correctly.

Expected loudness comes from ITU-R BS.1770-4, not from our output: the
reference sine (997 Hz, -20 dBFS peak, see fixtures_ingest) reads -20.0 LUFS
in stereo and -23.0 LUFS in mono, and its true peak is -20 dBTP.  In 5.1 the
surround channels weigh 1.41 (BS.1770-4 table 3) and LFE is excluded:
L, R, C + 1.41 x (Ls, Rs) gives -23.01 + 10 log10(3 + 2 x 1.41) LUFS.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fixtures_ingest import FORMATS, LOSSY, TEST_TAGS, ffmpeg, make, sine_source, tag_with_mutagen

from ingest import content_id, inspect
from ingest.inspect import allowed_container
from ingest.probe import probe_with_ffmpeg, probe_with_pyav
from tonearm.app.demo import cover_png
from tonearm.core.ffmpeg import locate

SECONDS = 4.0  # loudness range needs >= 4 s (ingest.inspect.MIN_LRA_SECONDS)
ONE_CHANNEL_LUFS = -20.0 - 3.01  # BS.1770-4: 0 dBFS 1 kHz sine in one channel reads -3.01 LKFS


@pytest.fixture(scope="module")
def ff():
    return locate()


def check(path: Path, ff):
    return inspect(path, asset_id=content_id(path), ffmpeg=ff, timeout=120)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_supported_formats_are_accepted_and_measured(tmp_path, ff, fmt):
    path = make(tmp_path, f"ref_{fmt}", fmt, seconds=SECONDS)
    info = check(path, ff)
    assert info.sample_rate == 48000 and info.channels == 2 and info.channel_layout == "stereo"
    assert info.asset_id == content_id(path) and info.size == path.stat().st_size
    assert info.duration_s == pytest.approx(SECONDS, abs=0.05 if fmt in LOSSY else 1e-6)
    lufs_tol, peak_tol = (0.5, 0.6) if fmt in LOSSY else (0.1, 0.1)
    assert info.loudness.integrated_lufs == pytest.approx(-20.0, abs=lufs_tol)
    assert info.loudness.true_peak_dbtp == pytest.approx(-20.0, abs=peak_tol)
    assert info.loudness.sample_peak_dbfs == pytest.approx(-20.0, abs=peak_tol)
    assert info.loudness.loudness_range_lu == pytest.approx(0.0, abs=0.5)  # a steady tone has no range
    assert not info.loudness.silent and not info.loudness.clipping and not info.has_video
    if fmt in LOSSY:
        assert info.bits_per_sample is None
    else:
        assert info.bits_per_sample == (24 if fmt in ("bwf", "flac", "alac") else 16)


def test_loudness_range_against_ebu_tech_3342_case_1(tmp_path, ff):
    """EBU Tech 3342 test signal 1: 1 kHz stereo sine, 20 s at -20 dBFS then 20 s at -30 dBFS: LRA 10 +- 1 LU."""
    expr = r"if(lt(t\,20)\,0.1\,0.031623)*sin(2*PI*1000*t)"  # commas escaped for the filtergraph
    path = make(tmp_path, "lra.flac", source=["-f", "lavfi", "-i", f"aevalsrc={expr}|{expr}:s=48000:d=40"])
    info = check(path, ff)
    assert info.loudness.loudness_range_lu == pytest.approx(10.0, abs=1.0)
    assert info.loudness.true_peak_dbtp == pytest.approx(-20.0, abs=0.1)


def test_short_master_has_no_loudness_range(tmp_path, ff):
    info = check(make(tmp_path, "short", "flac", seconds=3), ff)
    assert info.loudness.loudness_range_lu is None
    assert info.loudness.integrated_lufs == pytest.approx(-20.0, abs=0.1)


@pytest.mark.parametrize(
    ("layout", "rate", "expected_lufs"),
    [
        ("mono", 48000, ONE_CHANNEL_LUFS),
        ("5.1", 48000, ONE_CHANNEL_LUFS + 10 * math.log10(3 + 2 * 1.41)),
        ("7.1", 44100, ONE_CHANNEL_LUFS + 10 * math.log10(3 + 4 * 1.41)),
        ("stereo", 96000, -20.0),
        ("stereo", 8000, -20.0),
        ("stereo", 192000, -20.0),
    ],
)
def test_channel_layouts_and_rates(tmp_path, ff, layout, rate, expected_lufs):
    path = make(tmp_path, f"{layout}_{rate}", "flac", layout=layout, rate=rate, seconds=SECONDS,
                extra=["-sample_fmt", "s32"])
    info = check(path, ff)
    assert (info.channels, info.sample_rate, info.bits_per_sample) == (
        {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8}[layout], rate, 24)
    assert info.channel_layout.startswith(layout)
    assert info.duration_s == pytest.approx(SECONDS, abs=1e-6)
    assert info.loudness.integrated_lufs == pytest.approx(expected_lufs, abs=0.15)
    # 4x oversampling over-reads a little at low rates (BS.1770-4 Annex 2 allows for it)
    assert info.loudness.true_peak_dbtp == pytest.approx(-20.0, abs=0.15 if rate >= 44100 else 0.3)


def test_24bit_96k_wav(tmp_path, ff):
    path = make(tmp_path, "hires.wav", "bwf", rate=96000, seconds=SECONDS)
    info = check(path, ff)
    assert (info.container, info.codec, info.sample_rate, info.bits_per_sample) == ("wav", "pcm_s24le", 96000, 24)
    assert info.header_duration_s == pytest.approx(SECONDS) and info.duration_s == pytest.approx(SECONDS)


def test_pure_silence_is_accepted_and_flagged(tmp_path, ff):
    path = make(tmp_path, "silence.flac", source=["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo:d=3"])
    info = check(path, ff)
    assert info.loudness.silent and not info.loudness.clipping
    assert info.loudness.integrated_lufs is None  # every block is below the -70 LUFS absolute gate
    assert info.loudness.true_peak_dbtp is None and info.loudness.sample_peak_dbfs is None
    assert info.duration_s == pytest.approx(3.0)


def test_clipped_master_is_accepted_and_flagged(tmp_path, ff):
    loud = "1.6*sin(2*PI*997*t)"  # +4 dB over full scale, hard-clipped by the 16-bit conversion
    path = make(tmp_path, "clipped.wav", "wav", source=["-f", "lavfi", "-i", f"aevalsrc={loud}|{loud}:s=48000:d=3"])
    info = check(path, ff)
    assert info.loudness.clipping and not info.loudness.silent
    assert info.loudness.sample_peak_dbfs == pytest.approx(0.0, abs=0.01)


def test_full_scale_sine_is_not_clipping(tmp_path, ff):
    full = "0.999*sin(2*PI*997*t)"  # touches full scale but is not flat-topped
    path = make(tmp_path, "hot.wav", "wav", source=["-f", "lavfi", "-i", f"aevalsrc={full}|{full}:s=48000:d=3"])
    info = check(path, ff)
    assert not info.loudness.clipping
    assert info.loudness.integrated_lufs == pytest.approx(20 * math.log10(0.999), abs=0.1)  # stereo: = peak dBFS


def test_audio_with_video_uses_the_audio(tmp_path, ff):
    path = tmp_path / "music video.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=3:s=160x120:r=10", *sine_source(seconds=3), "-map", "0:v", "-map", "1:a",
           "-c:v", "mpeg4", "-c:a", "aac", "-b:a", "160k", "-shortest", "file:" + str(path))
    info = check(path, ff)
    assert info.has_video and info.codec == "aac" and info.channels == 2
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert info.loudness.integrated_lufs == pytest.approx(-20.0, abs=0.5)


def test_cover_art_stream_is_not_video(tmp_path, ff):
    path = make(tmp_path, "with_cover.mp3", "mp3", seconds=2)
    tag_with_mutagen(path, cover_png(), "image/png")
    assert check(path, ff).has_video is False


@pytest.mark.parametrize("fmt", ["flac", "mp3", "m4a", "alac", "vorbis", "opus", "wav", "aiff"])
def test_tags_and_artwork_read_back(tmp_path, ff, fmt):
    import hashlib

    path = make(tmp_path, f"tagged_{fmt}", fmt, seconds=2)
    cover, mime = cover_png(), "image/png"
    if fmt in ("m4a", "mp3"):  # a JPEG cover too: made by ffmpeg, sniffed by magic bytes
        jpg = tmp_path / "cover.jpg"
        ffmpeg("-f", "lavfi", "-i", "testsrc=s=32x32:d=1", "-frames:v", "1", "file:" + str(jpg))
        cover, mime = jpg.read_bytes(), "image/jpeg"
    tag_with_mutagen(path, cover, mime)
    info = check(path, ff)
    assert info.tags.title == TEST_TAGS["title"]
    assert info.tags.artist == TEST_TAGS["artist"]
    assert info.tags.album == TEST_TAGS["album"]
    assert info.tags.isrc == TEST_TAGS["isrc"]
    assert info.tags.track_number == TEST_TAGS["track"]
    assert info.artwork is not None
    assert (info.artwork.mime, info.artwork.size, info.artwork.sha256) == (
        mime, len(cover), hashlib.sha256(cover).hexdigest())


def test_wav_info_chunk_tags(tmp_path, ff):
    """ffmpeg writes RIFF LIST/INFO (INAM, IART, IPRD, IPRT) for WAV metadata."""
    path = make(tmp_path, "info.wav", "wav", seconds=1,
                extra=["-metadata", "title=Info Title", "-metadata", "artist=Info Artist",
                       "-metadata", "album=Info Album", "-metadata", "track=3"])
    info = check(path, ff)
    assert (info.tags.title, info.tags.artist, info.tags.album, info.tags.track_number) == (
        "Info Title", "Info Artist", "Info Album", 3)
    assert info.artwork is None


@pytest.mark.parametrize("fmt", ["flac", "wav", "mp3", "m4a", "opus", "aiff"])
def test_ffmpeg_fallback_probe_agrees_with_pyav(tmp_path, ff, fmt):
    """Without PyAV the probe parses ``ffmpeg -i``; both must describe a file the same way."""
    path = make(tmp_path, f"p_{fmt}", fmt, layout="5.1" if fmt == "flac" else "stereo", seconds=2)
    allowed = allowed_container(path)
    a, b = probe_with_pyav(path, allowed), probe_with_ffmpeg(path, allowed, ffmpeg=ff, timeout=60)
    assert (a.container, a.codec, a.sample_rate, a.channels, a.channel_layout, a.has_video) == (
        b.container, b.codec, b.sample_rate, b.channels, b.channel_layout, b.has_video)
    # ffmpeg prints the container duration in centiseconds; for MP3 it includes encoder padding
    assert a.header_duration_s == pytest.approx(b.header_duration_s, abs=0.05)


@pytest.mark.slow
def test_one_hour_master(tmp_path, ff):
    """A full hour decodes and measures correctly (cheap: 8 kHz mono tone; budget well under 60 s)."""
    path = tmp_path / "hour.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=997:sample_rate=8000:duration=3600", "-af", "volume=0.8",
           "-c:a", "flac", "-compression_level", "0", "file:" + str(path))
    info = check(path, ff)
    assert info.duration_s == pytest.approx(3600.0, abs=1e-6) and info.header_duration_s == pytest.approx(3600.0)
    # lavfi sine has amplitude 1/8; x0.8 = 0.1 = -20 dBFS; one channel -> -23.01 LUFS (997 Hz, K-weighting
    # at 8 kHz sampling differs slightly from 48 kHz, hence the wider tolerance)
    assert info.loudness.integrated_lufs == pytest.approx(ONE_CHANNEL_LUFS, abs=0.3)
    assert info.loudness.sample_peak_dbfs == pytest.approx(-20.0, abs=0.05)


def test_rf64_wav(tmp_path, ff):
    """RF64 (EBU Tech 3306) keeps the real data size in ds64; the RIFF field says 0xFFFFFFFF."""
    path = make(tmp_path, "big.wav", "wav", seconds=SECONDS, extra=["-rf64", "always"])
    assert path.read_bytes()[:4] == b"RF64"
    info = check(path, ff)
    assert info.header_duration_s == pytest.approx(SECONDS) and info.duration_s == pytest.approx(SECONDS)
