"""DASH MPDs: parsed by mpegdash, compared with the files on disk, played by ffmpeg."""

from __future__ import annotations

import math
import re
import subprocess
from fractions import Fraction

import pytest
from fixtures_packager import FFMPEG, dash_rate, elst_entries, ffprobe, measured_media, p4_boxes
from mpegdash.parser import MPEGDASHParser

PROFILES = {"segmented": "urn:mpeg:dash:profile:isoff-live:2011",
            "single": "urn:mpeg:dash:profile:isoff-on-demand:2011"}
MPDS = {"segmented": "manifest.mpd", "single": "single/manifest.mpd"}


def seconds(xs_duration: str) -> Fraction:
    m = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", xs_duration)
    assert m, xs_duration
    return Fraction(m.group(1))


def expand(timeline) -> list[tuple[int, int]]:
    out, t = [], 0
    for s in timeline.Ss:
        t = s.t if s.t is not None else t
        for _ in range((s.r or 0) + 1):
            out.append((t, s.d))
            t += s.d
    return out


def init_codecs(init: bytes, first_segment: bytes, tmp_path) -> tuple[str, int]:
    """(@codecs expected from the decoder configuration ffprobe reads, channels) for init + one segment."""
    probe = tmp_path / "probe.mp4"
    probe.write_bytes(init + first_segment)
    st = ffprobe(probe, "-show_streams")["streams"][0]
    tag = st["codec_tag_string"]
    codecs = {"mp4a": {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5"}.get(st.get("profile")), "Opus": "opus",
              "fLaC": "fLaC"}[tag]
    return codecs, int(st["channels"])


@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_mpd_describes_the_files_on_disk(pk, layout, tmp_path):
    path = pk.out / MPDS[layout]
    mpd = MPEGDASHParser.parse(str(path))
    assert mpd.type == "static" and mpd.profiles == PROFILES[layout]
    (period,) = mpd.periods
    shown = set()  # edit list durations: the presentation of every rung
    latest_start = Fraction(0)
    longest = Fraction(0)
    seen = set()
    priorities = {}
    for aset in period.adaptation_sets:
        assert (aset.content_type, aset.mime_type, aset.lang) == ("audio", "audio/mp4", "und")
        (acc,) = aset.audio_channel_configurations
        families = set()
        timelines = set()
        for rep in aset.representations:
            seen.add(rep.id)
            measured = measured_media(pk, layout, rep.id)
            latest_start = max(latest_start, Fraction(sum(t for _, _, t in measured[:-1]), 48000))
            longest = max(longest, max(Fraction(t, 48000) for _, _, t in measured))
            if layout == "segmented":
                (tpl,) = rep.segment_templates
                assert tpl.timescale == 48000
                init_path = path.parent / tpl.initialization
                timeline = expand(tpl.segment_timelines[0])
                files = [path.parent / tpl.media.replace("$Number%05d$", f"{n:05d}")
                         for n in range(tpl.start_number, tpl.start_number + len(timeline))]
                assert [f.stat().st_size for f in files] == [size for _, size, _ in measured]
                starts = [0]
                for _, _, ticks in measured[:-1]:
                    starts.append(starts[-1] + ticks)
                assert timeline == list(zip(starts, [t for _, _, t in measured]))
                timelines.add(tuple(timeline))
                head = (init_path.read_bytes(), files[0].read_bytes())
            else:
                init_path = path.parent / rep.base_urls[0].base_url_value
                (base,) = rep.segment_bases
                assert base.timescale == 48000
                data = init_path.read_bytes()
                lo, hi = map(int, base.index_range.split("-"))
                (sidx,) = p4_boxes(data[lo:hi + 1])
                assert sidx.type == b"sidx" and [r.referenced_size for r in sidx.references] == \
                    [size for _, size, _ in measured]
                lo, hi = map(int, base.initializations[0].range.split("-"))
                assert [b.type for b in p4_boxes(data[lo:hi + 1])] == [b"ftyp", b"moov"]
                timelines.add(tuple(r.segment_duration for r in sidx.references))
                off, size, _ = measured[0]
                head = (data[lo:hi + 1], data[off:off + size])
            _, ((edit_duration, _),) = elst_entries(head[0])
            shown.add(Fraction(edit_duration, 48000))
            codecs, channels = init_codecs(*head, tmp_path)
            assert rep.codecs == codecs and rep.audio_sampling_rate == "48000"
            assert int(acc.value) == channels == pk.channels  # 5.1 -> 6
            families.add(codecs.split(".")[0])
        assert len(families) == 1  # one codec family (and one channel layout) per AdaptationSet
        priorities[families.pop()] = int(aset.selection_priority)
        alignment = aset.segment_alignment if layout == "segmented" else aset.subsegment_alignment
        assert alignment == (len(timelines) == 1)
    assert seen == {p.rung.name for p in pk.layouts[layout]}
    # AAC, which every player decodes, is the preferred first track (dash.js picks by priority)
    assert max(priorities, key=priorities.get) == "mp4a" and len(set(priorities.values())) == len(priorities)
    # The master's length (every rung presents the same), not the media timeline's with the priming ...
    (master_length,) = shown
    assert master_length == Fraction(pk.seconds).limit_denominator(48000)
    assert abs(seconds(mpd.media_presentation_duration) - master_length) <= Fraction(1, 2 * 10**6)
    # ... and every segment starts well inside it: dash.js and Shaka skip one starting within 1 ms of the end.
    assert latest_start <= master_length - Fraction(1, 10)
    assert seconds(mpd.min_buffer_time) >= longest


@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_bandwidth_lets_a_client_play_without_stalling(pk, layout):
    """23009-1 @bandwidth: delivered at that rate from any segment, after minBufferTime, playback never waits."""
    mpd = MPEGDASHParser.parse(str(pk.out / MPDS[layout]))
    buffer = float(seconds(mpd.min_buffer_time))
    for aset in mpd.periods[0].adaptation_sets:
        for rep in aset.representations:
            measured = measured_media(pk, layout, rep.id)
            sizes = [size for _, size, _ in measured]
            durs = [ticks / 48000 for _, _, ticks in measured]
            for i in range(len(sizes)):
                arrived, play_at = 0.0, buffer
                for j in range(i, len(sizes)):
                    arrived += 8 * sizes[j] / rep.bandwidth
                    assert arrived <= play_at + 1e-9, (rep.id, i, j)
                    play_at += durs[j]
            # ... and it is not inflated: never above the highest single-segment rate; it is exactly the
            # 23009-1 figure recomputed from the same bytes, rounded up to bit/s.
            assert rep.bandwidth <= 1.01 * max(8 * s / d for s, d in zip(sizes, durs)) + 1
            ticks = [t for _, _, t in measured]
            assert rep.bandwidth == math.ceil(dash_rate(sizes, ticks, 48000, seconds(mpd.min_buffer_time)))


@pytest.mark.slow  # ffmpeg decodes every rung of every test master (make test; make test-fast checks the boxes)
@pytest.mark.parametrize("layout", ["segmented", "single"])
def test_ffmpeg_plays_every_representation(pk, layout):
    mpd = MPEGDASHParser.parse(str(pk.out / MPDS[layout]))
    count = sum(len(a.representations) for a in mpd.periods[0].adaptation_sets)
    for i in range(count):
        proc = subprocess.run([FFMPEG, "-v", "error", "-i", str(pk.out / MPDS[layout]), "-map", f"0:a:{i}",
                               "-f", "s16le", "-"], capture_output=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == b"" and len(proc.stdout) > 0, proc.stderr
