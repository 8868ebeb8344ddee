"""Single-file layout (init + sidx + fragments in single/<rung>.mp4), checked with pymp4 and ffmpeg."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_packager import decode, fragments, p4_boxes, pyav_frames, source


def test_sidx_indexes_every_fragment(pk):
    for p in pk.layouts["single"]:
        data = (pk.out / "single" / f"{p.rung.name}.mp4").read_bytes()
        boxes = p4_boxes(data)
        assert [b.type for b in boxes[:3]] == [b"ftyp", b"moov", b"sidx"]
        sidx = boxes[2]
        frags = fragments(data)
        assert sidx.reference_ID == 1 and sidx.timescale == 48000
        assert sidx.earliest_presentation_time == frags[0]["tfdt"] == 0
        assert sidx.first_offset == 0 and frags[0]["offset"] == sidx.end  # fragments follow the sidx directly
        assert len(sidx.references) == len(frags) == len(p.segments)
        for ref, frag in zip(sidx.references, frags):
            assert ref.reference_type == "MEDIA"  # pymp4 names type 0 (media), not 1 (index)
            assert ref.referenced_size == frag["size"]
            assert ref.segment_duration == sum(frag["durations"])
            assert ref.starts_with_SAP is True and ref.SAP_type == 1
        # Byte ranges the manifests will declare point at exactly those boxes.
        assert p.init_range == (0, boxes[1].end - 1)
        assert p.index_range == (sidx.offset, sidx.end - 1)
        assert [(s.offset, s.size) for s in p.segments] == [(f["offset"], f["size"]) for f in frags]
        assert frags[-1]["offset"] + frags[-1]["size"] == len(data)


def test_single_file_holds_the_same_fragments_as_the_segmented_layout(pk):
    for p in pk.layouts["single"]:
        data = (pk.out / "single" / f"{p.rung.name}.mp4").read_bytes()
        init = (pk.out / p.rung.name / "init.mp4").read_bytes()
        segs = b"".join((pk.out / p.rung.name / s.uri).read_bytes()
                        for s in pk.rendition("segmented", p.rung.name).segments)
        first, last = p.index_range
        assert data[:first] == init and data[last + 1:] == segs


@pytest.mark.slow  # ffmpeg decodes every rung of every test master (make test; make test-fast checks the boxes)
def test_single_file_decodes_like_the_encoder_output(pk, tmp_path):
    for p in pk.layouts["single"]:
        path = pk.out / "single" / f"{p.rung.name}.mp4"
        ours, err = decode(path)
        theirs, _ = decode(source(pk, p.rung.name), "-ignore_editlist", "1")
        assert err == "" and ours.size > 0 and np.array_equal(ours, theirs)
        assert pyav_frames(path) == pyav_frames(source(pk, p.rung.name))
