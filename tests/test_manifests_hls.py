"""HLS playlists: parsed by the m3u8 package, compared with the files on disk, played by ffmpeg."""

from __future__ import annotations

import math
from fractions import Fraction

import m3u8
import m3u8.protocol as P
import pytest
from fixtures_packager import (
    average_rate,
    concatenated,
    decode,
    elst_entries,
    measured_media,
    p4_boxes,
    rfc8216_peak,
)

from manifests import hls_tags as T

LAYOUT_DIRS = {"segmented": "", "single": "single/"}


def on_timeline(pk, layout: str, name: str) -> list[int]:
    """Ticks each segment on disk lasts on the playlist's timeline: its media duration (pymp4's trun durations),
    the last one ending where the init segment's edit list ends the presentation (its duration, 14496-12
    8.6.6), so that the segments keep their media-time starts and the playlist lasts the master's length."""
    init = pk.out / (f"{name}/init.mp4" if layout == "segmented" else f"single/{name}.mp4")
    _, ((shown, _),) = elst_entries(init.read_bytes())
    ticks = [t for _, _, t in measured_media(pk, layout, name)]
    ticks[-1] = shown - sum(ticks[:-1])
    assert ticks[-1] > 0
    return ticks


def test_manifest_map_names_every_layout(pk):
    assert pk.manifests == {"hls": "master.m3u8", "dash": "manifest.mpd", "hls_single": "single/master.m3u8",
                            "dash_single": "single/manifest.mpd"}
    for rel in pk.manifests.values():
        assert (pk.out / rel).is_file()


@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_media_playlists_follow_rfc8216_and_match_the_files(pk, layout):
    master_path = pk.out / f"{LAYOUT_DIRS[layout]}master.m3u8"
    master = m3u8.load(str(master_path))
    assert master.is_variant and master.is_independent_segments
    assert len(master.playlists) == len(pk.layouts[layout])
    for variant in master.playlists:
        assert not variant.uri.startswith("/") and "://" not in variant.uri  # relative: signed prefixes inherit
        name = variant.uri.split("/")[0].removesuffix(".m3u8")
        media_path = master_path.parent / variant.uri
        text = media_path.read_text()
        playlist = m3u8.loads(text, uri=str(media_path))
        assert playlist.version == 7 and playlist.playlist_type == "vod" and playlist.is_endlist
        measured = measured_media(pk, layout, name)
        durations = [s.duration for s in playlist.segments]
        # Media durations, the last one ending with the master: the playlist lasts the master's duration.
        assert durations == pytest.approx([ticks / 48000 for ticks in on_timeline(pk, layout, name)], abs=1e-6)
        assert sum(durations) == pytest.approx(pk.seconds, abs=1 / 48000 + len(durations) * 1e-6)
        assert playlist.target_duration == math.ceil(max(durations))
        (init,) = playlist.segment_map
        init_path = media_path.parent / init.uri
        assert init_path.is_file()
        if layout == "single":
            data = init_path.read_bytes()
            moov = p4_boxes(data)[1]
            assert init.byterange == f"{moov.end}@0"
            assert [s.byterange for s in playlist.segments] == [f"{size}@{off}" for off, size, _ in measured]
            assert {s.uri for s in playlist.segments} == {init.uri}
        else:
            assert [(media_path.parent / s.uri).stat().st_size for s in playlist.segments] == \
                [size for _, size, _ in measured]


@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_declared_bit_rates_match_the_bytes_on_disk(pk, layout):
    """BANDWIDTH is the RFC 8216 peak and AVERAGE-BANDWIDTH the average of the segment bytes on disk over
    their EXTINF durations (RFC 8216 4.1; the last one ends with the master), recomputed here from those same
    bytes and durations: equal to the bit/s, rounded up, no tolerance.
    (Apple's authoring rule allows 10% between BANDWIDTH and a peak a validator *measures* while
    downloading; nothing here is such a measurement.)  Apple's other rule, peak <= 2x average, holds."""
    master = m3u8.load(str(pk.out / f"{LAYOUT_DIRS[layout]}master.m3u8"))
    for variant in master.playlists:
        name = variant.uri.split("/")[0].removesuffix(".m3u8")
        measured = measured_media(pk, layout, name)
        sizes = [size for _, size, _ in measured]
        ticks = on_timeline(pk, layout, name)
        target = math.ceil(Fraction(max(ticks), 48000))
        peak, average = rfc8216_peak(sizes, ticks, 48000, target), average_rate(sizes, ticks, 48000)
        info = variant.stream_info
        assert info.bandwidth == math.ceil(peak), (name, info.bandwidth, float(peak))
        assert info.average_bandwidth == math.ceil(average), (name, info.average_bandwidth, float(average))
        assert info.bandwidth >= info.average_bandwidth
        assert info.bandwidth <= 2 * info.average_bandwidth, (name, info.bandwidth, info.average_bandwidth)


@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_variants_carry_codecs_and_start_on_a_safe_rung(pk, layout):
    master = m3u8.load(str(pk.out / f"{LAYOUT_DIRS[layout]}master.m3u8"))
    codecs = {v.uri.split("/")[0].removesuffix(".m3u8"): v.stream_info.codecs for v in master.playlists}
    assert all(codecs.values())
    assert codecs["flac"] == "fLaC"  # lossless is a variant of its own: players that cannot decode it skip it
    assert codecs["opus_96k"] == "opus"
    assert codecs["aac_128k"] == "mp4a.40.2"
    assert master.playlists[0].uri.startswith("aac_128k")  # hls.js and Apple start on the first variant


@pytest.mark.slow  # ffmpeg decodes every rung of every test master (make test; make test-fast checks the boxes)
def test_ffmpeg_plays_every_media_playlist(pk, tmp_path):
    for p in pk.layouts["segmented"]:
        reference, _ = decode(concatenated(pk, p.rung.name, tmp_path / f"{p.rung.name}.mp4"))
        for playlist in (pk.out / p.rung.name / "index.m3u8", pk.out / "single" / f"{p.rung.name}.m3u8"):
            pcm, err = decode(playlist)
            assert err == "" and pcm.size == reference.size, playlist


def test_tag_spellings_agree_with_the_m3u8_package_and_round_trip(pk):
    assert (T.EXTM3U, T.VERSION, T.TARGETDURATION, T.PLAYLIST_TYPE, T.INDEPENDENT_SEGMENTS, T.MAP, T.EXTINF,
            T.BYTERANGE, T.ENDLIST, T.STREAM_INF) == (
        P.ext_m3u, P.ext_x_version, P.ext_x_targetduration, P.ext_x_playlist_type, P.ext_is_independent_segments,
        P.ext_x_map, P.extinf, P.ext_x_byterange, P.ext_x_endlist, P.ext_x_stream_inf)

    def media(pl):
        return (pl.version, pl.target_duration, pl.playlist_type, pl.is_endlist,
                [(m.uri, m.byterange) for m in pl.segment_map],
                [(s.uri, s.duration, s.byterange) for s in pl.segments])

    def variants(pl):
        return [(v.uri, v.stream_info.bandwidth, v.stream_info.average_bandwidth, v.stream_info.codecs)
                for v in pl.playlists]

    for layout, folder in LAYOUT_DIRS.items():
        master_text = (pk.out / f"{folder}master.m3u8").read_text()
        parsed = m3u8.loads(master_text)
        assert variants(m3u8.loads(parsed.dumps())) == variants(parsed)
        for v in parsed.playlists:
            text = (pk.out / folder / v.uri).read_text()
            once = m3u8.loads(text)
            assert media(m3u8.loads(once.dumps())) == media(once)
            # Deterministic numbers: six decimals at most, no float noise.
            for line in text.splitlines():
                if line.startswith(T.EXTINF):
                    value = line.split(":", 1)[1].rstrip(",")
                    assert len(value.split(".")[1]) <= 6 and value == value.strip()


def test_master_shorter_than_half_a_target_duration_declares_its_whole_rate(tmp_path):
    """No run of segments lasts 0.5-1.5 x TARGETDURATION (0.32 s of media, TARGETDURATION 1): BANDWIDTH is
    the rate of the whole presentation, which is then also AVERAGE-BANDWIDTH (tonearm's documented rule)."""
    from fixtures_packager import RUNGS, package_master

    short = package_master(tmp_path, seconds=0.3, rungs=(RUNGS[1], RUNGS[3]))
    master = m3u8.load(str(short.out / "master.m3u8"))
    for variant in master.playlists:
        name = variant.uri.split("/")[0]
        ((_, size, _),) = measured_media(short, "segmented", name)
        (ticks,) = on_timeline(short, "segmented", name)
        assert ticks == round(0.3 * 48000)  # the master's length: no priming, no padding
        whole = 8 * size / (ticks / 48000)
        assert variant.stream_info.bandwidth == variant.stream_info.average_bandwidth
        assert abs(variant.stream_info.bandwidth - whole) <= 1
