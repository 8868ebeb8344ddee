"""The job queue with the embedded SQLite catalog: jobs run in the submitting process's own pool."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fixtures_queue import ffmpeg_processes, make_master, queue_setup, wait_for

from tonearm.app.jobs import JobState, Tombstoned, open_queue
from tonearm.app.queue_local import LocalQueue

# real worker processes and whole-pipeline runs: make test, not make test-fast
pytestmark = pytest.mark.slow


def test_local_queue_runs_dedupes_cancels_and_tombstones(tmp_path: Path) -> None:
    cfg, _env = queue_setup(tmp_path, "")
    queue = open_queue(cfg)
    assert isinstance(queue, LocalQueue)
    try:
        a = make_master(tmp_path / "a.flac", seconds=2)
        copy = Path(shutil.copy(a, tmp_path / "copy.flac"))
        first, second = queue.submit(str(a)), queue.submit(str(copy), origin="watch")
        assert first.id == second.id  # same bytes: one job
        long = queue.submit(str(make_master(tmp_path / "long.flac", seconds=30, freq=700)), priority=-10)
        done = queue.wait([first.id], timeout=90)[0]
        assert done.state is JobState.PUBLISHED and done.asset_id and done.attempts == 1
        wait_for(lambda: queue.get(long.id).state is JobState.TRANSCODING and ffmpeg_processes(str(tmp_path)), 90,
                 "the long job's encoder")
        # a reader of the same catalog (the API, a webhook sender) leaves the running job's state alone
        LocalQueue(cfg, run=False)
        assert queue.get(long.id).state is JobState.TRANSCODING
        t0 = time.monotonic()
        assert queue.cancel(long.id).state in (JobState.TRANSCODING, JobState.CANCELLED)
        assert queue.wait([long.id], timeout=10)[0].state is JobState.CANCELLED
        wait_for(lambda: not ffmpeg_processes(str(tmp_path)) or None, 5, "ffmpeg to be killed")
        assert time.monotonic() - t0 < 3
        queue.take_down(done.asset_id)
        assert queue.is_tombstoned(done.asset_id)
        try:
            queue.submit(str(a))
            raise AssertionError("a tombstoned asset was accepted without force")
        except Tombstoned as exc:
            assert exc.code == "asset_taken_down"
        assert [e.type for e in queue.events_since(0)] == ["published", "taken_down"]
        assert queue.stats()["jobs"]["cancelled"] == 1
    finally:
        queue.close()
