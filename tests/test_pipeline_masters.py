"""Odd masters through the whole pipeline, played back over HTTP by ffmpeg: mono, 5.1
(lossy rungs downmixed to stereo, the lossless rung kept 5.1), 96 kHz/24-bit, 8 kHz, and
a one-hour master on a reduced ladder (slow, still run in CI)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from fixtures_pipeline import (
    MANIFESTS,
    OriginServer,
    decode_every_rung,
    frames_of,
    get,
    measure_dash,
    measure_hls_media,
    pipeline_config,
    publish,
    stream_rungs,
    xs_seconds,
)
from fixtures_transcode import make_master, master_info, system_ffmpeg
from mpegdash.parser import MPEGDASHParser

from tonearm.core.model import Rung

# Slow (make test, not make test-fast): odd masters published then decoded rung by rung over HTTP, and an
# hour-long master: 40 s to a few minutes.
pytestmark = pytest.mark.slow

ODD = {
    # name: (make_master kwargs, channels of lossy rungs, channels of the lossless rung)
    "mono": (dict(seconds=5, rate=44100, channels=1), 1, 1),
    "surround": (dict(seconds=5, rate=48000, channels=6, sample_fmt="s32"), 2, 6),
    "hires": (dict(seconds=5, rate=96000, channels=2, sample_fmt="s32"), 2, 2),
    "phone": (dict(seconds=5, rate=8000, channels=1, codec="pcm_s16le"), 1, 1),
}


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("odd")
    cfg = pipeline_config(root / "data", lossless=True)
    out = {}
    for name, (kw, _, _) in ODD.items():
        master = make_master(root / f"{name}.{'wav' if kw.get('codec') == 'pcm_s16le' else 'flac'}", **kw)
        out[name] = (master, publish(master, cfg))
    with OriginServer(cfg) as server:
        yield server, out


@pytest.mark.parametrize("manifest", MANIFESTS)
@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_master_plays_with_the_channel_rule(odd, name: str, manifest: str) -> None:
    server, published = odd
    master, result = published[name]
    _, lossy, lossless = ODD[name]
    renditions = {r["name"]: r for r in result.info["renditions"]}
    assert {n: r["channels"] for n, r in renditions.items()} == {
        n: lossless if r["codec"] == "flac" else lossy for n, r in renditions.items()}
    assert all(r["sample_rate"] == 48000 for r in renditions.values())
    url = server.url(result.asset_id, manifest)
    off = decode_every_rung(system_ffmpeg(), url, stream_rungs(url), renditions, frames_of(master_info(master).duration_s))
    assert off == {}, f"decoded length minus master length, in samples: {off}"


def test_surround_lossless_keeps_its_own_adaptation_set(odd) -> None:
    """DASH-IF IOP: stereo and 5.1 never share an AdaptationSet."""
    server, published = odd
    _, result = published["surround"]
    for manifest in ("manifest.mpd", "single/manifest.mpd"):
        mpd = MPEGDASHParser.parse(get(server.url(result.asset_id, manifest)).decode())
        layout = {r.id: int(a.audio_channel_configurations[0].value)
                  for a in mpd.periods[0].adaptation_sets for r in a.representations}
        assert layout == {"aac_256k": 2, "aac_128k": 2, "aac_64k": 2, "opus_96k": 2, "flac": 6}


@pytest.mark.slow
@pytest.mark.long  # two minutes of encoding: run by make bench, not make test
def test_one_hour_master(tmp_path: Path) -> None:
    """An hour of mono audio on an AAC + Opus ladder: 563 segments per rung, DASH bit rates still
    exactly those of the served bytes, and the whole hour decodes over HTTP."""
    master = tmp_path / "hour.flac"
    subprocess.run([system_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:r=48000:d=3600",
                    "-c:a", "flac", str(master)], check=True, timeout=300)  # a sine compresses: cheap to make
    rungs = (Rung(name="aac_64k", codec="aac", bitrate=64_000), Rung(name="opus_96k", codec="opus", bitrate=96_000))
    cfg = pipeline_config(tmp_path / "data", rungs=rungs)
    result = publish(master, cfg)
    renditions = {r["name"]: r for r in result.info["renditions"]}
    assert {r["segments"] for r in renditions.values()} == {math.ceil(3600 / 6.4)}
    with OriginServer(cfg) as server:
        for variant in ("aac_64k/index.m3u8", "single/opus_96k.m3u8"):
            playlist, measured = measure_hls_media(server.url(result.asset_id, variant))
            assert len(playlist.segments) == 563
            assert 0 <= sum(measured.seconds) - 3600 <= 0.05
        mpd, reps = measure_dash(server.url(result.asset_id, "single/manifest.mpd"))
        for rep in reps:  # recomputed exactly from the served bytes; declared rounded up to bit/s
            assert rep.bandwidth == math.ceil(rep.measured.dash_bandwidth(xs_seconds(mpd.min_buffer_time)))
        expected = frames_of(3600)
        for manifest, rung in (("master.m3u8", "aac_64k"), ("single/manifest.mpd", "opus_96k")):
            url = server.url(result.asset_id, manifest)
            off = decode_every_rung(system_ffmpeg(), url, stream_rungs(url), renditions, expected, only={rung})
            assert off == {}, off
