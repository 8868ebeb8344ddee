"""Manifests state the presentation the listener hears: the master's duration, the same on every rung,
whatever the encoder's priming (AAC 1024 samples, Opus 312) and padding.

Masters go through the real pipeline (the default ladder plus the lossless rung, both layouts); the
m3u8 package reads every media playlist's EXTINF sum and mpegdash every MPD's
mediaPresentationDuration, and each is compared with the master's length counted by decoding the
master with ffmpeg: within one sample of the master's rate for lossless masters, within one codec
frame for lossy ones (whose length their decoder already decides to that frame)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest
from fixtures_pipeline import pipeline_config, publish, xs_seconds
from mpegdash.parser import MPEGDASHParser

LAYOUTS = {"segmented": ("master.m3u8", "manifest.mpd"), "single": ("single/master.m3u8", "single/manifest.mpd")}
TONE = "0.3*sin(2*PI*440*t)+0.05*sin(2*PI*3000*t)"
# name: (seconds, rate, container args, samples per frame of the master's codec (1: lossless, sample-exact))
MASTERS = {
    "flac-44k-odd": (7.777, 44100, ["-c:a", "flac"], 1),  # not a whole number of 48 kHz ticks per master sample
    "wav-48k-12.8s": (12.8, 48000, ["-c:a", "pcm_s16le"], 1),  # two segments exactly: AAC's last one starts at the end
    "flac-48k-clip": (0.5, 48000, ["-c:a", "flac"], 1),  # shorter than one segment
    "mp3-44k": (7.3, 44100, ["-c:a", "libmp3lame", "-b:a", "192k"], 1152),
    "m4a-48k": (9.1, 48000, ["-c:a", "aac", "-b:a", "160k"], 1024),
}
SUFFIX = {"flac": ".flac", "pcm_s16le": ".wav", "libmp3lame": ".mp3", "aac": ".m4a"}

# Slow (make test, not make test-fast): five masters through the whole pipeline first, about 10 s.
pytestmark = pytest.mark.slow


def _make(folder: Path, name: str) -> Path:
    seconds, rate, args, _ = MASTERS[name]
    path = folder / (name + SUFFIX[args[1]])
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"aevalsrc='{TONE}|{TONE}':s={rate}:d={seconds}", *args, str(path)], check=True, timeout=60)
    return path


def _decoded_length(path: Path, rate: int) -> Fraction:
    """Seconds of audio ffmpeg decodes from the master at its own rate (gapless trimming included)."""
    pcm = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", str(rate), "-f", "s16le", "-"], capture_output=True, check=True, timeout=60).stdout
    return Fraction(len(pcm) // 2, rate)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Fraction, Fraction]]:
    """name -> (published folder, the master's decoded length, the tolerance), all in seconds."""
    root = tmp_path_factory.mktemp("durations")
    cfg = pipeline_config(root / "data", lossless=True)
    out = {}
    for name, (_, rate, _, frame) in MASTERS.items():
        master = _make(root, name)
        result = publish(master, cfg)
        folder = root / "data" / "published" / result.asset_id
        out[name] = (folder, _decoded_length(master, rate), Fraction(frame, rate))
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(MASTERS))
def test_hls_playlists_last_the_masters_duration_on_every_rung(published, name, layout):
    folder, length, tolerance = published[name]
    master = m3u8.load(str(folder / LAYOUTS[layout][0]))
    assert len(master.playlists) == 5  # AAC 256/128/64, Opus 96, FLAC
    totals = {}
    for variant in master.playlists:
        playlist = m3u8.load(str((folder / LAYOUTS[layout][0]).parent / variant.uri))
        extinf = [Fraction(str(s.duration)) for s in playlist.segments]  # the playlist's decimals, exactly
        totals[variant.stream_info.codecs + " " + variant.uri] = sum(extinf)
        assert all(d > 0 for d in extinf) and max(round(d) for d in extinf) <= playlist.target_duration
    rounding = Fraction(len(extinf), 2 * 10**6)  # six decimals per EXTINF
    for rung, total in totals.items():
        assert abs(total - length) <= tolerance + rounding, (rung, float(total), float(length))
    assert max(totals.values()) - min(totals.values()) <= 2 * rounding, totals  # the same on every rung


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(MASTERS))
def test_dash_presentation_lasts_the_masters_duration(published, name, layout):
    folder, length, tolerance = published[name]
    mpd = MPEGDASHParser.parse(str(folder / LAYOUTS[layout][1]))
    declared = xs_seconds(mpd.media_presentation_duration)
    (period,) = mpd.periods
    assert period.duration is None or xs_seconds(period.duration) == declared
    assert abs(declared - length) <= tolerance + Fraction(3, 2 * 10**6), (float(declared), float(length))
    # ... while every segment starts well inside the Period (dash.js and Shaka skip one within 1 ms of its end).
    for aset in period.adaptation_sets:
        for rep in aset.representations:
            if rep.segment_templates:
                (tpl,) = rep.segment_templates
                starts = [0]
                for s in tpl.segment_timelines[0].Ss:
                    for _ in range((s.r or 0) + 1):
                        starts.append(starts[-1] + s.d)
                assert Fraction(starts[-2], tpl.timescale) <= declared - Fraction(1, 10), rep.id


def test_segments_keep_their_media_time_and_the_last_ends_with_the_master(published):
    """The 12.8 s master is exactly two segments of media time on the FLAC rung; AAC's 1024 priming ticks (Opus's
    312) push the end of its media past 12.8 s: that sliver is part of the second segment (a third one would start
    at the presentation's end, where no player fetches it), which the playlist ends at 12.8 s like FLAC's."""
    folder, length, _ = published["wav-48k-12.8s"]
    assert length == Fraction(64, 5)
    for rung in ("aac_128k", "opus_96k", "flac"):
        text = (folder / rung / "index.m3u8").read_text()
        assert [line.split(":")[1] for line in text.splitlines() if line.startswith("#EXTINF")] == ["6.4,", "6.4,"]
        assert sorted(p.name for p in (folder / rung).glob("seg-*.m4s")) == ["seg-00001.m4s", "seg-00002.m4s"]
    mpd = MPEGDASHParser.parse(str(folder / "manifest.mpd"))
    assert mpd.media_presentation_duration == "PT12.8S"
    aac = next(a for a in mpd.periods[0].adaptation_sets if a.representations[0].codecs == "mp4a.40.2")
    (tpl,) = aac.representations[0].segment_templates
    assert [(s.t, s.d, s.r) for s in tpl.segment_timelines[0].Ss] == [(0, 307200, None), (None, 308224, None)]
