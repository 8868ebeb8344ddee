"""The demo master: generated locally, identical bytes every time, tagged, with a cover."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ingest import content_id, inspect
from tonearm.app.demo import FILENAME, TAGS, cover_png, write_demo_master
from tonearm.core.ffmpeg import locate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_master(tmp_path_factory.mktemp("demo"))


def test_same_bytes_every_time(demo, tmp_path):
    stamp = demo.stat().st_mtime_ns
    again = write_demo_master(demo.parent)
    assert again == demo and demo.stat().st_mtime_ns == stamp  # an identical file is left alone
    elsewhere = write_demo_master(tmp_path)
    assert elsewhere.read_bytes() == demo.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILENAME]  # no temp files left behind


def test_demo_is_a_valid_tagged_master(demo):
    info = inspect(demo, asset_id=content_id(demo), ffmpeg=locate(), timeout=120)
    assert (info.container, info.codec, info.sample_rate, info.channels, info.bits_per_sample) == (
        "flac", "flac", 44100, 2, 16)
    assert info.duration_s == pytest.approx(20.0, abs=1e-6)
    assert (info.tags.title, info.tags.artist, info.tags.album, info.tags.isrc, info.tags.track_number) == (
        TAGS["title"], TAGS["artist"], TAGS["album"], TAGS["isrc"], int(TAGS["tracknumber"]))
    png = cover_png()
    assert info.artwork is not None
    assert (info.artwork.mime, info.artwork.size, info.artwork.sha256) == (
        "image/png", len(png), hashlib.sha256(png).hexdigest())
    loud = info.loudness
    assert not loud.silent and not loud.clipping
    assert -20.0 < loud.integrated_lufs < -10.0  # a normal music level, not a test tone
    assert loud.sample_peak_dbfs == pytest.approx(-1.0, abs=0.01)  # normalised to -1 dBFS peak
    assert loud.true_peak_dbtp < 0.0
    assert loud.loudness_range_lu is not None and loud.loudness_range_lu > 0.0  # it has dynamics


def test_cover_is_a_valid_png(tmp_path):
    png = tmp_path / "cover.png"
    png.write_bytes(cover_png())
    import av

    with av.open(str(png)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (64, 64)


@pytest.mark.slow  # `tonearm demo` in a subprocess renders the 20 s master again
def test_demo_command_prints_the_path(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tonearm.app.cli", "--data", str(tmp_path / "data"), "demo",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == tmp_path / "out" / FILENAME
