"""One decode per master (tonearm.app.shared_pass): same verdicts, same measurements, same bytes.

The reference is the two-pass path it replaces, run in the same test: ``ingest.inspect`` (its own
full decode) then ``transcode.encode_ladder``.  The shared run must report the same ``MasterInfo``
(loudness included: the measuring branch is split off before the resampler, so it sees the very
samples the separate pass saw) and write byte-identical encoder outputs; a bad master must be
quarantined with the code ``inspect`` gives it, with nothing published or left in staging.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fixtures_ingest import make, truncate

from ingest import Rejected, content_id, inspect
from ingest.inspect import check_header, judge_log, measurement_branch
from tonearm.app.pipeline import Context, Outcome, process
from tonearm.app.shared_pass import validate_and_encode
from tonearm.core import ffmpeg as core_ffmpeg
from tonearm.core.config import load
from tonearm.core.ffmpeg import locate
from tonearm.core.storage import LocalStorage
from transcode import encode_ladder, encode_measured


@pytest.fixture(scope="module")
def ff():
    return locate()


def _cfg(root: Path):
    return load(env={}, overrides={"storage": {"root": str(root)}})


# 24-bit stereo FLAC resampled 44.1 -> 48 kHz, 16-bit mono WAV at 96 kHz, and a lossy MP3.
CASES = [
    ("flac", {"rate": 44100, "layout": "stereo", "extra": ["-sample_fmt", "s32"]}),
    ("wav", {"rate": 96000, "layout": "mono"}),
    ("mp3", {"rate": 48000, "layout": "stereo"}),
]


@pytest.mark.parametrize("fmt,kw", CASES, ids=[c[0] for c in CASES])
def test_shared_run_matches_the_two_pass_path(tmp_path: Path, ff, fmt: str, kw: dict) -> None:
    master = make(tmp_path, f"m-{fmt}", fmt, seconds=3, **kw)
    cfg = _cfg(tmp_path / "data")
    aid = content_id(master)
    ref_info = inspect(master, asset_id=aid, source_name=master.name, ffmpeg=ff, timeout=120, limits=cfg.ingest)
    ref = encode_ladder(master, ref_info, cfg.ladder, tmp_path / "ref", ffmpeg=ff, timeout=120)
    storage = LocalStorage(cfg.storage.root)
    with validate_and_encode(cfg, storage, master, asset_id=aid, source_name=master.name, owner="test-1",
                             ffmpeg=ff) as shared:
        assert shared.encoded is not None and shared.staging is not None
        # Measurements from the shared run equal the separate pass's (same samples, same filters):
        # stated bound 0.1 LU / 0.1 dB, observed difference 0.
        got, want = shared.info.loudness, ref_info.loudness
        assert got.integrated_lufs == pytest.approx(want.integrated_lufs, abs=0.1)
        assert got.true_peak_dbtp == pytest.approx(want.true_peak_dbtp, abs=0.1)
        assert dataclasses.asdict(shared.info) == dataclasses.asdict(ref_info)
        assert [r.rung for r in shared.encoded] == [r.rung for r in ref]
        for mine, theirs in zip(shared.encoded, ref):
            assert mine.path.read_bytes() == theirs.path.read_bytes(), mine.rung.name
    assert not shared.staging.exists()  # leaving the block cleans up


def test_the_measuring_branch_itself_finds_a_truncated_master(tmp_path: Path, ff) -> None:
    """No fallback involved: the log of the encoder run alone gives inspect's code."""
    good = make(tmp_path, "good", "flac", rate=44100, seconds=4)
    bad = truncate(good, tmp_path / "cut.flac", 0.6)
    cfg = _cfg(tmp_path / "data")
    with pytest.raises(Rejected) as ref:
        inspect(bad, asset_id="x" * 64, ffmpeg=ff, timeout=120, limits=cfg.ingest)
    head = check_header(bad, ffmpeg=ff, timeout=120, limits=cfg.ingest)
    _, log = encode_measured(bad, head.provisional(asset_id="x" * 64), cfg.ladder, tmp_path / "enc", ffmpeg=ff,
                             timeout=120, taps=(measurement_branch(head),))
    with pytest.raises(Rejected) as shared:
        judge_log(head, log, asset_id="x" * 64, limits=cfg.ingest)
    assert shared.value.error.code == ref.value.error.code
    # Negative control: the good master's run passes the same judge.
    head = check_header(good, ffmpeg=ff, timeout=120, limits=cfg.ingest)
    _, log = encode_measured(good, head.provisional(asset_id="y" * 64), cfg.ladder, tmp_path / "enc2", ffmpeg=ff,
                             timeout=120, taps=(measurement_branch(head),))
    assert judge_log(head, log, asset_id="y" * 64, limits=cfg.ingest).duration_s == pytest.approx(4.0, abs=0.001)


def test_pipeline_quarantines_a_bad_master_with_inspects_code_and_publishes_nothing(tmp_path: Path, ff) -> None:
    good = make(tmp_path, "song", "flac", rate=48000, seconds=3)
    bad = truncate(good, tmp_path / "song-cut.flac", 0.7)  # the header passes; the decode comes up short
    with pytest.raises(Rejected) as ref:
        inspect(bad, asset_id="z" * 64, ffmpeg=ff, timeout=120)
    ctx = Context.from_config(_cfg(tmp_path / "data"))
    result = process(ctx, bad)
    assert result.outcome is Outcome.QUARANTINED
    assert result.error is not None and result.error.code == ref.value.error.code == "truncated"
    for key in ("decoded_s", "header_s", "decoded_samples"):
        assert result.error.details[key] == ref.value.error.details[key]
    data = tmp_path / "data"
    assert not any((data / "published").iterdir())
    assert not any((data / "staging").iterdir())  # the discarded encoder outputs are gone


def test_a_good_master_is_decoded_by_one_ffmpeg_run(tmp_path: Path, monkeypatch) -> None:
    """Every ffmpeg run that opens the master is counted (a spy around the real runner)."""
    master = make(tmp_path, "once", "flac", rate=44100, seconds=3)
    runs: list[list[str]] = []
    real = core_ffmpeg.run

    def spy(argv, **kw):
        runs.append(list(argv))
        return real(argv, **kw)

    for mod in ("tonearm.core.ffmpeg", "transcode.encode", "ingest.decode", "ingest.probe"):
        monkeypatch.setattr(f"{mod}.run", spy, raising=False)
    ctx = Context.from_config(_cfg(tmp_path / "data"))
    result = process(ctx, master)
    assert result.outcome is Outcome.PUBLISHED, result.error
    opened = [a for a in runs if any(x.startswith("file:") and x.endswith((".flac", ".bin")) or ".incoming-" in x
                                     for x in a)]
    assert len(opened) == 1, opened
    assert "ebur128" in " ".join(opened[0]) and "aac" in " ".join(opened[0])


def test_a_ladder_split_across_two_runs_writes_the_same_bytes(tmp_path: Path, ff, monkeypatch) -> None:
    """A lone master's ladder in two concurrent ffmpeg runs (transcode.split): same info, same bytes."""
    master = make(tmp_path, "split", "flac", rate=44100, seconds=3)
    cfg = _cfg(tmp_path / "data")
    aid = content_id(master)
    storage = LocalStorage(cfg.storage.root)
    runs: list[list[str]] = []
    real = core_ffmpeg.run_async

    async def spy(argv, **kw):
        runs.append(list(argv))
        return await real(argv, **kw)

    monkeypatch.setattr("transcode.encode.run_async", spy)
    with validate_and_encode(cfg, storage, master, asset_id=aid, source_name=master.name, owner="t-1",
                             ffmpeg=ff, encoders=2) as two, \
         validate_and_encode(cfg, storage, master, asset_id=aid, source_name=master.name, owner="t-2",
                             ffmpeg=ff, encoders=1) as one:
        assert len(runs) == 2 and sum("ebur128" in " ".join(a) for a in runs) == 1  # one run carries the tap
        assert dataclasses.asdict(two.info) == dataclasses.asdict(one.info)
        assert [r.rung.name for r in two.encoded] == [r.rung.name for r in one.encoded]
        for a, b in zip(two.encoded, one.encoded):
            assert a.path.read_bytes() == b.path.read_bytes(), a.rung.name


def test_split_rungs_balances_the_ladder_and_keeps_every_rung() -> None:
    from tonearm.app.batch import encoders_per_job
    from transcode import split_rungs

    ladder = _cfg(Path("/nonexistent")).ladder.all_rungs
    groups = split_rungs(ladder, 2)
    assert sorted(r.name for g in groups for r in g) == sorted(r.name for r in ladder)
    assert len(groups) == 2 and all(groups)
    assert split_rungs(ladder, 1) == [list(ladder)]
    # The tail of a batch splits: with 2 cores the last two jobs to start; a lone master too.
    assert encoders_per_job(4, 2) == [1, 1, 2, 2]
    assert encoders_per_job(1, 2) == [2]
    assert encoders_per_job(20, 2) == [1] * 18 + [2, 2]
    assert encoders_per_job(3, 1) == [1, 1, 1]
