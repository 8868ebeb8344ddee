"""Packaging time added by content protection (packager.protect), against clear packaging in the same run.

One master (``Scale.max_seconds`` long: 4 min, 10 s with ``--quick``) is encoded once with the
default ladder; then the packager writes every layout from those encodes with no key, and with
a cbcs, a cenc and an aes-128 key, 5 times (3 with ``--quick``) after an untimed warm-up, the
schemes interleaved; the best time is kept (the packager is CPU bound and deterministic, so the
minimum is the least disturbed measurement).  Encoding is not
timed: protection changes nothing before the packager.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Bench, busy_fraction, load_average
from ingest import inspect
from packager import package
from tonearm.core.config import load
from tonearm.core.ffmpeg import locate, run
from tonearm.core.keys import open_keystore
from transcode import encode_ladder

SCHEMES = ("none", "cbcs", "cenc", "aes-128")
FAKE_ID = "b" * 64


def _master(path: Path, seconds: float, ffmpeg: str) -> Path:
    expr = "0.4*sin(2*PI*t*(220+110*floor(t/3)))"
    run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"aevalsrc='{expr}|{expr}':s=48000:d={seconds}", "-c:a", "flac", str(path)], timeout=600)
    return path


def bench_protection(b: Bench) -> None:
    quick = b.scale.max_seconds <= 30
    seconds, repeats = (10.0, 3) if quick else (b.scale.max_seconds, 5)
    cfg = load(env={})
    ff = locate(cfg.ffmpeg.path)
    work = b.work / "protection"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    master = _master(work / "master.flac", seconds, ff.path)
    info = inspect(master, asset_id=FAKE_ID, source_name=master.name, ffmpeg=ff, timeout=600, limits=cfg.ingest)
    encoded = encode_ladder(master, info, cfg.ladder, work / "enc", ffmpeg=ff, timeout=1800)
    keys = open_keystore(work / "keys")
    load_before, busy = load_average(), busy_fraction()
    rows: dict[str, Any] = {scheme: {"runs_s": [], "media_bytes": 0} for scheme in SCHEMES}
    keyed = {scheme: None if scheme == "none" else keys.key_for(FAKE_ID, scheme) for scheme in SCHEMES}
    package(encoded, cfg.ladder, work / "warm-up", layout=cfg.ladder.layouts[0], loudness=info.loudness)  # not timed
    for rep in range(repeats):  # the schemes interleaved, so a slow moment of the machine hits them alike
        for scheme in SCHEMES:
            out = work / f"out-{scheme}-{rep}"
            t0 = time.perf_counter()
            packaged = [package(encoded, cfg.ladder, out, layout=lay, loudness=info.loudness, key=keyed[scheme])
                        for lay in cfg.ladder.layouts]
            rows[scheme]["runs_s"].append(time.perf_counter() - t0)
            rows[scheme]["media_bytes"] = sum(s.size for layout in packaged for p in layout for s in p.segments)
            shutil.rmtree(out, ignore_errors=True)
    for scheme in SCHEMES:
        row = rows[scheme]
        row["best_s"] = min(row["runs_s"])
        print(f"bench: protection {scheme:<8} packaging {row['best_s']:.3f} s for {seconds:g} s of audio "
              f"({row['media_bytes'] / 1e6:.1f} MB of segments, {len(cfg.ladder.layouts)} layouts)", flush=True)
    b.results["protection"] = {"audio_seconds": seconds, "repeats": repeats, "layouts": list(cfg.ladder.layouts),
                               "rungs": [r.name for r in cfg.ladder.all_rungs], "schemes": rows,
                               "load_before": load_before, "busy_before": busy, "load_after": load_average()}
    clear = rows["none"]["best_s"]
    b.fig("protection", "clear packaging, wall seconds per hour of audio", clear / seconds * 3600, "s", "report",
          None, baseline=f"{clear:.3f} s for {seconds:g} s of audio, every rung and layout")
    for scheme in SCHEMES[1:]:
        added = rows[scheme]["best_s"] - clear
        b.fig("protection", f"{scheme}: packaging time added by encryption", added / clear * 100 if clear else 0.0, "%",
              "report", None, baseline=f"clear {clear:.3f} s", note=(
                  f"{rows[scheme]['best_s']:.3f} s; {added / seconds * 3600:.2f} s per hour of audio; "
                  f"{rows[scheme]['media_bytes'] / 1e6 / max(added, 1e-9):.0f} MB/s encrypted"))
    shutil.rmtree(work, ignore_errors=True)
