"""`make run`'s publishing path: ``tonearm --data DIR ingest "$(tonearm --data DIR demo)"``
publishes the demo master, and the origin serves it playable by ffmpeg over HLS and DASH."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_pipeline import OriginServer, decode_every_rung, frames_of, pipeline_config, stream_rungs
from fixtures_transcode import master_info, system_ffmpeg

TONEARM = Path(sys.executable).with_name("tonearm")  # the console script `make run` calls


def _tonearm(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TONEARM), "--data", str(data), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # the 20 s demo master through the whole pipeline, every rung decoded: about 10 s
def test_demo_master_is_published_and_plays(tmp_path: Path) -> None:
    data = tmp_path / "data"
    doctor = _tonearm(data, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    demo = _tonearm(data, "demo")
    assert demo.returncode == 0, demo.stderr
    master = Path(demo.stdout.strip())
    assert master.is_file()

    ingest = _tonearm(data, "ingest", str(master))
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stdout.startswith(f"published: {master} -> ")
    asset_id = ingest.stdout.split("->")[1].strip()
    assert sorted(p.name for p in (data / "published").iterdir()) == [asset_id]

    again = _tonearm(data, "ingest", str(master))  # `make run` twice: nothing to do the second time
    assert again.returncode == 0 and again.stdout.startswith("already_published:"), again.stderr

    cfg = pipeline_config(data)
    renditions = {r["name"]: r for r in json.loads((data / "published" / asset_id / "asset.json").read_text())
                  ["renditions"]}
    assert sorted(renditions) == sorted(r.name for r in cfg.ladder.all_rungs)
    expected = frames_of(master_info(master).duration_s)
    with OriginServer(cfg) as server:
        for manifest in ("master.m3u8", "manifest.mpd"):
            url = server.url(asset_id, manifest)
            assert decode_every_rung(system_ffmpeg(), url, stream_rungs(url), renditions, expected) == {}
