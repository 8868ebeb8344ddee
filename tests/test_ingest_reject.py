"""Bad masters: each gets its documented code from ingest.errors and a readable message."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fixtures_ingest import copy, ffmpeg, make, patch_wav_data_size, sine_source, truncate

from ingest import ERROR_CODES, Rejected, content_id, inspect
from ingest.errors import EMPTY_FILE, TOO_LARGE
from ingest.identity import quarantine_id
from tonearm.core.ffmpeg import locate


@pytest.fixture(scope="module")
def ff():
    return locate()


def rejection(path: Path, ff) -> Rejected:
    with pytest.raises(Rejected) as exc:
        inspect(path, asset_id=content_id(path), ffmpeg=ff, timeout=120)
    err = exc.value.error
    assert err.code in ERROR_CODES and err.message and "\n" not in err.message
    return exc.value


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.touch()
    with pytest.raises(Rejected) as exc:
        content_id(path)
    assert exc.value.error.code == EMPTY_FILE
    assert exc.value.error.details["quarantine_id"] == quarantine_id(path)


def test_too_large_is_configurable(tmp_path, monkeypatch):
    path = make(tmp_path, "big", "wav", seconds=1)
    with pytest.raises(Rejected) as exc:
        content_id(path, max_bytes=1000)
    assert exc.value.error.code == TOO_LARGE and exc.value.error.details["max_bytes"] == 1000
    assert len(content_id(path, max_bytes=10**9)) == 64


def test_too_large_comes_from_config_and_is_quarantined(tmp_path):
    from tonearm.app.pipeline import Context, Outcome, process
    from tonearm.core.config import load

    path = make(tmp_path, "big", "wav", seconds=1)
    cfg = load(env={"TONEARM_INGEST_MAX_BYTES": "1000", "TONEARM_DATA": str(tmp_path / "data")})
    assert cfg.ingest.max_bytes == 1000
    result = process(Context.from_config(cfg), path)
    assert result.outcome is Outcome.QUARANTINED and result.error.code == TOO_LARGE
    reason = json.loads(next((tmp_path / "data" / "quarantine").glob("*/reason.json")).read_text())
    assert reason["code"] == TOO_LARGE and path.exists()


def test_content_id_is_sha256_of_bytes(tmp_path):
    import hashlib

    path = make(tmp_path, "x", "flac", seconds=1)
    assert content_id(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".m4a", ".ogg"])
def test_random_bytes(tmp_path, ff, suffix):
    rnd = random.Random(1234)
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(bytes(rnd.getrandbits(8) for _ in range(50_000)))
    assert rejection(path, ff).error.code == "not_audio"


def test_text_file_named_mp3(tmp_path, ff):
    path = tmp_path / "notes.mp3"
    path.write_text("these are not the bytes you are looking for\n" * 100)
    assert rejection(path, ff).error.code == "not_audio"


@pytest.mark.parametrize("fmt", ["flac", "mp3", "wav", "aiff", "vorbis", "opus"])
def test_truncated(tmp_path, ff, fmt):
    src = make(tmp_path, f"whole_{fmt}", fmt, seconds=10)
    rej = rejection(truncate(src, tmp_path / f"cut{src.suffix}", 0.6), ff)
    assert rej.error.code == "truncated"
    if fmt in ("vorbis", "opus"):  # Ogg has no length field: the missing end-of-stream page gives it away
        assert "end-of-stream" in rej.error.message
    else:
        assert rej.error.details["decoded_s"] < rej.error.details["header_s"] - rej.error.details["tolerance_s"]


@pytest.mark.parametrize("fmt", ["m4a", "alac"])
def test_truncated_mp4_without_index(tmp_path, ff, fmt):
    """ffmpeg writes moov last: a cut MP4 has no sample index and is not a readable container."""
    src = make(tmp_path, f"whole_{fmt}", fmt, seconds=10)
    assert rejection(truncate(src, tmp_path / "cut.m4a", 0.6), ff).error.code == "not_audio"


def test_truncated_faststart_m4a(tmp_path, ff):
    """With the index first (faststart), the cut shows as missing media data."""
    src = make(tmp_path, "fs", "m4a", seconds=10, extra=["-movflags", "+faststart"])
    assert rejection(truncate(src, tmp_path / "cut_fs.m4a", 0.6), ff).error.code in ("truncated", "decode_error")


def test_wav_header_claims_more_than_the_file_holds(tmp_path, ff):
    src = make(tmp_path, "w", "wav", seconds=4)
    rej = rejection(patch_wav_data_size(src, tmp_path / "claims_more.wav", 2.0), ff)
    assert rej.error.code == "truncated"
    assert rej.error.details["header_s"] == pytest.approx(8.0, abs=1e-3)
    assert rej.error.details["decoded_s"] == pytest.approx(4.0, abs=1e-3)


def test_wav_header_claims_less_than_the_file_holds(tmp_path, ff):
    src = make(tmp_path, "w", "wav", seconds=4)
    rej = rejection(patch_wav_data_size(src, tmp_path / "claims_less.wav", 0.5), ff)
    assert rej.error.code == "duration_mismatch"
    assert rej.error.details["trailing_bytes"] == rej.error.details["header_data_bytes"]


def test_wav_with_empty_data_chunk(tmp_path, ff):
    src = make(tmp_path, "w", "wav", seconds=1)
    raw = src.read_bytes()
    at = raw.index(b"data")
    path = tmp_path / "header_only.wav"
    path.write_bytes(raw[: at + 4] + b"\0\0\0\0")
    assert rejection(path, ff).error.code == "zero_duration"


def test_corrupted_flac_frames(tmp_path, ff):
    src = make(tmp_path, "c", "flac", seconds=10)
    data = bytearray(src.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 200):
        data[i] ^= 0x55
    path = tmp_path / "corrupt.flac"
    path.write_bytes(bytes(data))
    rej = rejection(path, ff)
    assert rej.error.code == "decode_error"
    assert rej.error.details["errors"] and all("0x" not in e for e in rej.error.details["errors"])


def test_mp3_without_xing_header_is_accepted(tmp_path, ff):
    path = make(tmp_path, "nx", "mp3", seconds=3, extra=["-write_xing", "0"])
    info = inspect(path, asset_id=content_id(path), ffmpeg=ff, timeout=60)
    assert info.header_duration_s is None and info.duration_s == pytest.approx(3.0, abs=0.06)


def test_video_only(tmp_path, ff):
    path = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=2:s=160x120:r=10", "-c:v", "mpeg4", "file:" + str(path))
    rej = rejection(path, ff)
    assert rej.error.code == "no_audio_stream" and rej.error.details["streams"] == ["video"]


def test_too_many_channels(tmp_path, ff):
    nine = "|".join(["0.1*sin(2*PI*997*t)"] * 9)
    path = make(tmp_path, "nine.wav", "wav", source=["-f", "lavfi", "-i", f"aevalsrc={nine}:s=48000:d=1"])
    rej = rejection(path, ff)
    assert rej.error.code == "unsupported_channels" and rej.error.details["channels"] == 9


@pytest.mark.parametrize("rate", [4000, 384000])
def test_sample_rate_out_of_range(tmp_path, ff, rate):
    path = make(tmp_path, f"r{rate}.wav", "wav", rate=rate, seconds=0.5)
    rej = rejection(path, ff)
    assert rej.error.code == "unsupported_sample_rate" and rej.error.details["sample_rate"] == rate


def test_input_is_never_modified(tmp_path, ff):
    src = make(tmp_path, "w", "wav", seconds=2)
    bad = patch_wav_data_size(src, tmp_path / "bad.wav", 0.5)
    before = (bad.read_bytes(), bad.stat().st_mtime_ns)
    rejection(bad, ff)
    assert (bad.read_bytes(), bad.stat().st_mtime_ns) == before
    assert copy(src, tmp_path / "again.wav").read_bytes() == src.read_bytes()


def test_error_codes_are_documented():
    import ingest.errors as errors

    for code in ERROR_CODES:
        assert f"``{code}``" in errors.__doc__
    from tonearm.core.ffmpeg import FfmpegError, FfmpegNotFound, FfmpegTimeout

    assert {FfmpegError.code, FfmpegNotFound.code, FfmpegTimeout.code} <= set(ERROR_CODES)


def test_sine_source_is_what_the_reference_claims(tmp_path):
    """Guard the fixture itself: the generated reference really peaks at 0.1 (-20 dBFS)."""
    import numpy as np

    raw = tmp_path / "ref.f32"
    ffmpeg(*sine_source(seconds=1), "-f", "f32le", "-c:a", "pcm_f32le", "file:" + str(raw))
    samples = np.frombuffer(raw.read_bytes(), dtype="<f4")
    assert float(np.max(np.abs(samples))) == pytest.approx(0.1, abs=1e-4)


def test_truncated_rf64(tmp_path, ff):
    src = make(tmp_path, "big.wav", "wav", seconds=6, extra=["-rf64", "always"])
    rej = rejection(truncate(src, tmp_path / "cut.wav", 0.5), ff)
    assert rej.error.code == "truncated" and rej.error.details["header_s"] == pytest.approx(6.0)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "wav", "opus"])
@pytest.mark.parametrize("fraction", [0.1, 0.97])
def test_a_cut_anywhere_is_rejected(tmp_path, ff, fmt, fraction):
    """Early or late, a cut never passes; a late one may show only as a damaged last frame."""
    src = make(tmp_path, f"whole_{fmt}", fmt, seconds=6)
    rej = rejection(truncate(src, tmp_path / f"cut{src.suffix}", fraction), ff)
    assert rej.error.code in ("truncated", "decode_error")
    if fraction < 0.5:
        assert rej.error.code == "truncated"
