"""The structure is checked, not hoped for: layers, no cycles, small modules, one table per concept."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("tonearm", "ingest", "transcode", "packager", "manifests", "origin")
MAX_MODULE_LINES = 500


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_and_acyclic_contracts_hold() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def _tree(root: Path, files: dict[str, str]) -> None:
    """A synthetic project with tonearm's package names, every module empty unless given."""
    base = {f"{p}/__init__.py": "" for p in PACKAGES} | {"tonearm/core/__init__.py": "", "tonearm/app/__init__.py": "",
                                                         "tonearm/core/model.py": "", "tonearm/app/cli.py": ""}
    for rel, text in (base | files).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize("rel,text", [
    ("tonearm/core/config.py", "from tonearm.app import cli\n"),  # the core reaching up
    ("ingest/discover.py", "def f():\n    from tonearm.app.cli import main\n"),  # hidden in a function
    ("transcode/encode.py", "import packager\n"),  # a stage importing another
    ("origin/api.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from origin.app import X\n"),
], ids=["core-imports-app", "stage-imports-app-in-a-function", "stage-imports-stage", "cycle-in-a-package"])
def test_the_contracts_catch_a_back_reference(tmp_path: Path, rel: str, text: str) -> None:
    files = {rel: text}
    if rel == "origin/api.py":
        files["origin/app.py"] = "from origin import api\n"
    _tree(tmp_path, files)
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout + proc.stderr


def test_no_module_is_longer_than_about_500_lines() -> None:
    sources = [p for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert len(sources) > 40 and not long


def test_a_packager_failure_reaches_the_job_record_with_its_own_code(tmp_path: Path, monkeypatch) -> None:
    from fixtures_ingest import make

    from packager.errors import DemuxError
    from tonearm.app import pipeline
    from tonearm.core.catalog import Catalog
    from tonearm.core.config import load

    def broken(*args, **kwargs):
        raise DemuxError("aac_256k.mp4: moov box runs past the end of the file")

    monkeypatch.setattr(pipeline, "package", broken)
    cfg = load(None, env={}, overrides={"storage": {"root": str(tmp_path / "data")}})
    ctx = pipeline.Context.from_config(cfg)
    result = pipeline.process(ctx, make(tmp_path, "m", "flac", seconds=1))
    assert result.outcome is pipeline.Outcome.FAILED and result.error.code == "encoder_output_unreadable"
    record = Catalog(cfg.catalog_path).get(result.asset_id)
    assert record.error["code"] == "encoder_output_unreadable" and "moov" in record.error["message"]


def test_adding_a_codec_is_one_table_entry(tmp_path: Path, monkeypatch) -> None:
    """An ALAC entry in the codec table reaches every reader of the table: nothing else is edited."""
    from fixtures_packager import master_info

    from manifests.hls import variant_order
    from packager.codecs import describe
    from tonearm.core import codecs
    from tonearm.core.config import LadderConfig, load
    from tonearm.core.ffmpeg import FfmpegInfo
    from tonearm.core.model import PackagedRendition, Rung
    from transcode.channels import target_channels
    from transcode.encode import build_command

    alac = codecs.Codec(name="alac", encoder="alac", fourcc="alac", codecs="alac", frame_samples=3840,
                        lossless=True, max_channels=None, bitrates=None)
    monkeypatch.setitem(codecs.CODECS, "alac", alac)

    ladder_cfg = {"rungs": [{"name": "aac_128k", "codec": "aac", "bitrate": 128000}, {"name": "lossless",
                                                                                      "codec": "alac"}]}
    cfg = load(None, env={}, overrides={"ladder": ladder_cfg})  # config validation reads the table
    assert [r.codec for r in cfg.ladder.rungs] == ["aac", "alac"]
    assert "alac" in codecs.needed_encoders()  # tonearm doctor and the ffmpeg check
    ff = FfmpegInfo(path="ffmpeg", source="test", version="x", encoders=frozenset({"aac", "alac"}))
    argv, _ = build_command(tmp_path / "m.flac", master_info(2.0, channels=6), LadderConfig(rungs=cfg.ladder.rungs),
                            tmp_path, ffmpeg=ff)
    assert argv[argv.index("-c:a", argv.index("-c:a") + 1) + 1] == "alac"  # the transcoder's encoder
    assert target_channels(cfg.ladder.rungs[1], 6) == 6  # the channel rule: lossless keeps the layout
    entry = b"\x00\x00\x00\x24alac" + bytes(6) + b"\x00\x01" + bytes(8) + b"\x00\x02\x00\x10" + bytes(4) \
        + (48000 << 16).to_bytes(4, "big")
    assert (describe(entry).codecs, describe(entry).family) == ("alac", "alac")  # the packager's CODECS
    rendition = dataclasses.replace(_packaged(), rung=Rung(name="lossless", codec="alac", bitrate=None))
    aac = dataclasses.replace(_packaged(), rung=Rung(name="aac_128k", codec="aac", bitrate=128000))
    assert [p.rung.codec for p in variant_order([rendition, aac])] == ["aac", "alac"]  # manifest order
    assert isinstance(rendition, PackagedRendition)


def _packaged():
    from tonearm.core.model import PackagedRendition, Rung, SegmentEvent

    seg = SegmentEvent(rung="r", index=1, start=0, duration=48000, size=1000, uri="seg-00001.m4s")
    return PackagedRendition(rung=Rung(name="r", codec="aac", bitrate=1), codecs="mp4a.40.2", timescale=48000,
                             sample_rate=48000, channels=2, init_uri="init.mp4", init_size=10, segments=(seg,),
                             priming=0, presentation_duration=48000)
