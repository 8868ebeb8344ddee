"""Segmented layout (init.mp4 + seg-NNNNN.m4s), checked with readers that are not ours:
pymp4 for boxes, ffprobe for packets and decoder configuration, ffmpeg and PyAV for decoding."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_packager import (
    concatenated,
    decode,
    elst_entries,
    ffprobe,
    fragments,
    packets,
    pyav_frames,
    segment_files,
    source,
)

SEGMENT = 307200  # 6.4 s at 48 kHz, the default ladder
TAIL = 4800  # 0.1 s: a last segment starts at least this long before the master's end (packager.layout.plan)
FRAME = {"mp4a.40.2": 1024, "opus": 960}


def test_fragments_carry_every_encoder_packet_with_continuous_tfdt(pk):
    for p in pk.layouts["segmented"]:
        files = segment_files(pk, p.rung.name)
        assert len(files) == len(p.segments) >= 1
        frags = [f for path in files for f in fragments(path.read_bytes())]
        assert len(frags) == len(files)  # one fragment per segment
        expected_tfdt = 0
        for seq, f in enumerate(frags, start=1):
            assert f["sequence"] == seq
            assert f["tfdt_version"] == 1 and f["base_is_moof"]
            assert f["data_offset"] == f["moof_size"] + 8  # samples start right after the mdat header
            assert f["tfdt"] == expected_tfdt, f"{p.rung.name} fragment {seq}"
            expected_tfdt += sum(f["durations"])
        src = packets(source(pk, p.rung.name))
        assert [s for f in frags for s in f["sizes"]] == [int(x["size"]) for x in src]
        assert sum(len(f["sizes"]) for f in frags) == len(src)
        assert expected_tfdt == sum(int(x["duration"]) for x in src)


def test_segments_are_cut_on_the_segment_grid_and_identical_across_aac_and_opus(pk):
    grids = {}
    for p in pk.layouts["segmented"]:
        frags = [fragments(path.read_bytes())[0] for path in segment_files(pk, p.rung.name)]
        starts = [f["tfdt"] for f in frags]
        durations = [sum(f["durations"]) for f in frags]
        assert all(d > 0 for d in durations)
        if p.codecs in FRAME:  # frames tile the 15360-sample grid: exact k * 6.4 s cuts
            assert starts == [k * SEGMENT for k in range(len(frags))]
            # ... the last longer only by a sliver of under 0.1 s beyond the master's end plus the priming
            assert all(d == SEGMENT for d in durations[:-1]) and durations[-1] < SEGMENT + TAIL + p.priming
            grids[p.rung.name] = starts
        else:  # FLAC blocks need not tile it: each cut is the first block starting at or after k * 6.4 s
            assert all(s >= k * SEGMENT for k, s in enumerate(starts))
        assert [(s.start, s.duration) for s in p.segments] == list(zip(starts, durations))
    assert len(set(map(tuple, grids.values()))) == 1, grids


def test_a_last_segment_starts_at_least_a_tenth_of_a_second_before_the_masters_end(pk):
    """AAC's 1024 priming ticks push a master of exactly 6.4 s past the first boundary: that sliver (which
    dash.js and Shaka would never fetch, starting at the Period's end) is part of the first and only segment."""
    for layout in ("segmented", "single"):
        for p in pk.layouts[layout]:
            assert p.segments[-1].start <= p.presentation_duration - TAIL, (p.rung.name, p.segments[-1])
            if pk.seconds == 6.4:
                assert len(p.segments) == 1 and p.segments[0].duration == p.priming + SEGMENT, p.rung.name


def test_edit_list_skips_priming_and_ends_with_the_master(pk, tmp_path):
    for p in pk.layouts["segmented"]:
        src = source(pk, p.rung.name)
        init = (pk.out / p.rung.name / "init.mp4").read_bytes()
        timescale, entries = elst_entries(init)
        src_timescale, src_entries = elst_entries(src.read_bytes())
        assert timescale == 48000 and len(entries) == 1
        duration, media_time = entries[0]
        assert media_time == src_entries[-1][1]  # the encoder's own priming (AAC 1024, Opus 312, FLAC 0)
        assert media_time == {"mp4a.40.2": 1024, "opus": 312, "fLaC": 0}[p.codecs]
        frame = FRAME.get(p.codecs, 4608)
        assert abs(duration - round(pk.seconds * 48000)) < frame, (p.rung.name, duration)
        # ffprobe sees our edit list: the stream starts priming ticks before zero.
        cat = concatenated(pk, p.rung.name, tmp_path / f"{p.rung.name}.mp4")
        start = float(ffprobe(cat, "-show_streams")["streams"][0]["start_time"])
        assert start == pytest.approx(-media_time / 48000, abs=1e-6)
        # A decoder that honours edit lists (PyAV's libavformat) yields what it yields for the encoder's file.
        assert pyav_frames(cat) == pyav_frames(src)


@pytest.mark.slow  # ffmpeg decodes every rung of every test master (make test; make test-fast checks the boxes)
def test_init_plus_segments_decode_bit_exact_like_the_encoder_output(pk, tmp_path):
    for p in pk.layouts["segmented"]:
        cat = concatenated(pk, p.rung.name, tmp_path / f"{p.rung.name}.mp4")
        ours, err = decode(cat)
        assert err == ""
        # Same packets, same decoder configuration -> the same PCM (edit list ignored on both sides).
        theirs, _ = decode(source(pk, p.rung.name), "-ignore_editlist", "1")
        assert ours.size > 0 and np.array_equal(ours, theirs)


def test_init_carries_the_encoder_decoder_configuration(pk, tmp_path):
    for p in pk.layouts["segmented"]:
        cat = concatenated(pk, p.rung.name, tmp_path / f"{p.rung.name}.mp4")
        ours = ffprobe(cat, "-show_streams", "-show_data")["streams"][0]
        theirs = ffprobe(source(pk, p.rung.name), "-show_streams", "-show_data")["streams"][0]
        for key in ("codec_name", "codec_tag_string", "profile", "sample_rate", "channels", "extradata"):
            assert ours.get(key) == theirs.get(key), key
        assert int(ours["channels"]) == p.channels == pk.channels
        assert {"mp4a": "mp4a.40.2" if ours.get("profile") == "LC" else None, "Opus": "opus",
                "fLaC": "fLaC"}[ours["codec_tag_string"]] == p.codecs


def test_listener_hears_every_segment_in_order(pk):
    for layout in ("segmented", "single"):
        for p in pk.layouts[layout]:
            heard = [e for e in pk.events if e.rung == p.rung.name and (e.offset is not None) == (layout == "single")]
            assert tuple(heard) == p.segments
            assert [e.index for e in heard] == list(range(1, len(heard) + 1))
    for p in pk.layouts["segmented"]:
        on_disk = [f.stat().st_size for f in segment_files(pk, p.rung.name)]
        assert on_disk == [s.size for s in p.segments]
        assert (pk.out / p.rung.name / "init.mp4").stat().st_size == p.init_size


def test_ffmpeg_9_encoder_output_packages_too(tmp_path):
    """imageio-ffmpeg's 9.x writes different MP4s (movie timescale, FLAC block sizes): package those as well."""
    import imageio_ffmpeg
    from fixtures_packager import SMALL_RUNGS, package_master

    pk9 = package_master(tmp_path, seconds=3.0, rungs=SMALL_RUNGS, ffmpeg=imageio_ffmpeg.get_ffmpeg_exe())
    for p in pk9.layouts["segmented"]:
        cat = concatenated(pk9, p.rung.name, tmp_path / f"{p.rung.name}.cat.mp4")
        ours, err = decode(cat)
        theirs, _ = decode(source(pk9, p.rung.name), "-ignore_editlist", "1")
        assert err == "" and np.array_equal(ours, theirs)
        _, entries = elst_entries((pk9.out / p.rung.name / "init.mp4").read_bytes())
        assert abs(entries[0][0] - 3 * 48000) < 4608
