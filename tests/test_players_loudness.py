"""The demo page's loudness normalisation and its catalog (search, paging), in Debian's headless Chromium.

Two masters of the same music (the demo master's groove compressed and limited the way a loud
master is, about -8 LUFS, and the same file through ffmpeg's ``volume=-10dB``) are ingested by the real pipeline and served by ``tonearm serve``; a third catalog
entry is a copy of the quiet one whose descriptor lacks ``loudness.gain_db``/``target_lufs`` and the
per-rendition ``bandwidth`` (a descriptor from before those keys), so the page computes the gain itself
and shows a dash for the declared peak.

The page plays each asset with normalisation on, then off over the same stretch of media time; the
level is measured after the GainNode (an AnalyserNode on the page's output bus, RMS over 4 s).  On,
the assets are within 1 dB of each other; off, they are 10 dB apart (the negative control: a page
that applied no gain, or the wrong one, fails there or on the first check); on minus off is the gain
the page says it applies.  See tests/players/loudness-checks.mjs.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from fixtures_players import CHROMIUM, PLAYERS_DIR, ingest, running_origin

from tonearm.app.demo import write_demo_master
from tonearm.core.catalog import Catalog
from tonearm.core.config import Config, StorageConfig
from tonearm.core.ffmpeg import locate, run
from tonearm.core.model import AssetState

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

RUNG = "aac_256k"  # every measurement on the same rendition, so the codec's own level cannot differ
FROM_S, SECONDS = 2.0, 4.0  # past the 1 s fade-in, two bars of the groove
QUIET_DB = 10.0
ON_TOLERANCE_DB = 1.0  # 1 LU
# hls.js's non-fatal stall notes (as tests/players/harness.js's HLS_BENIGN): on a busy CI host a buffer can run
# dry for a moment; the level is still measured over the same media time, so they are not the page's errors.
HLS_BENIGN = frozenset({"bufferStalledError", "bufferNudgeOnStall", "bufferSeekOverHole"})
OFF_TOLERANCE_DB = 1.0
APPLIED_TOLERANCE_DB = 0.5


def expected_gain(loudness: dict[str, Any]) -> float | None:
    """What the page applies: the descriptor's gain, or the same rule with -14 LUFS when it has none."""
    if "gain_db" in loudness:
        return loudness["gain_db"]
    target = loudness.get("target_lufs", -14.0)
    if loudness.get("silent") or loudness.get("integrated_lufs") is None or loudness.get("true_peak_dbtp") is None:
        return None
    return round(min(target - loudness["integrated_lufs"], -1.0 - loudness["true_peak_dbtp"]), 2)


def decibels(db: float) -> str:
    """As the page writes it (JavaScript's Math.round: halves up)."""
    r = math.floor(db * 10 + 0.5) / 10
    return f"{'+' if r > 0 else '-' if r < 0 else ''}{abs(r):.1f} dB"


def kbps(bps: int) -> str:
    return f"{int(bps / 1000 + 0.5)} kb/s"  # Math.round


# A loud master: compressed (8:1 above -26 dBFS, +10 dB make-up) and limited, so its loudness, not its
# peak, decides its gain (about -5.7 dB to -14 LUFS; the quiet copy gets about +4.3 dB).
LOUD_MASTERING = "acompressor=threshold=0.05:ratio=8:attack=2:release=80:makeup=10,alimiter=limit=0.7:attack=1:release=20:level=false"


def _mastered_loud(src: Path, dst: Path) -> Path:
    run([locate().path, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:a",
         "-af", LOUD_MASTERING, "-c:a", "flac", "-sample_fmt", "s32",
         "-metadata", "title=Groove in C, mastered loud", str(dst)], timeout=60)
    return dst


def _quieter(src: Path, dst: Path) -> Path:
    """The same master 10 dB down (24-bit, so nothing is lost to the 16-bit grid), retitled."""
    run([locate().path, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:a",
         "-af", f"volume=-{QUIET_DB:g}dB", "-c:a", "flac", "-sample_fmt", "s32",
         "-metadata", "title=Groove in C, 10 dB down", "-metadata", "artist=The Quiet Ones", str(dst)], timeout=60)
    return dst


def _old_style_copy(cfg: Config, asset: dict[str, Any]) -> dict[str, Any]:
    """A published copy of ``asset`` under a new id whose descriptor has no gain, target or declared peaks."""
    new_id = hashlib.sha256(b"tonearm-loudness-test: descriptor without gain_db").hexdigest()
    published = cfg.data_dir / "published"
    shutil.copytree(published / asset["id"], published / new_id)
    descriptor = json.loads((published / new_id / "asset.json").read_text())
    descriptor["asset_id"] = new_id
    descriptor["tags"] = {**descriptor.get("tags", {}), "title": "Groove in C, an older descriptor"}
    for key in ("gain_db", "target_lufs"):
        descriptor["loudness"].pop(key, None)
    for r in descriptor["renditions"]:
        r.pop("bandwidth", None)
        r.pop("average_bandwidth", None)
    (published / new_id / "asset.json").write_text(json.dumps(descriptor))
    cat = Catalog(cfg.catalog_path)
    cat.claim(new_id, "older.flac")
    cat.set_state(new_id, AssetState.PUBLISHED, info=descriptor)
    return {**descriptor, "id": new_id}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    root = tmp_path_factory.mktemp("loudness-site")
    cfg = Config(storage=StorageConfig(root=root / "data"))
    (root / "masters").mkdir()
    loud_master = _mastered_loud(write_demo_master(root / "demo", cfg), root / "masters" / "loud.flac")
    loud = ingest(cfg, loud_master)
    quiet = ingest(cfg, _quieter(loud_master, root / "masters" / "quiet.flac"))
    older = _old_style_copy(cfg, quiet)
    with running_origin(cfg.data_dir, root / "origin.log") as base:
        yield base, {"loud": loud, "quiet": quiet, "older": older}


def drive_checks(spec: dict[str, Any], tmp_path: Path, timeout_s: float) -> dict[str, Any]:
    missing = [what for what, ok in ((f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
                                     ("tests/players/node_modules (npm ci)",
                                      (PLAYERS_DIR / "node_modules" / "playwright-core").is_dir()),
                                     ("node", shutil.which("node") is not None)) if not ok]
    if missing:
        pytest.fail(f"browser tests need {', '.join(missing)}: run scripts/test-deps.sh", pytrace=False)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"timeoutMs": int(timeout_s * 1000), **spec}))
    proc = subprocess.run(["node", str(PLAYERS_DIR / "loudness-checks.mjs"), str(spec_path)], cwd=PLAYERS_DIR,
                          capture_output=True, text=True, timeout=timeout_s + 30)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"loudness-checks.mjs printed no report (exit {proc.returncode}): {proc.stderr[-3000:]}"
    report = json.loads(lines[-1])
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _why(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1)[:8000]


def page_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's errors, less hls.js's non-fatal stall notes."""
    return [e for e in errors if not (e.get("fatal") is False and e.get("details") in HLS_BENIGN)]


def test_normalisation_levels_two_masters_10_db_apart(site, tmp_path: Path, record_property) -> None:
    base, assets = site
    loud, quiet, older = assets["loud"], assets["quiet"], assets["older"]
    # The masters measure 10 LU apart, so their gains are 10 dB apart (the pipeline's figures, or the page's).
    gains = {k: expected_gain(a["loudness"]) for k, a in assets.items()}
    assert math.isclose(loud["loudness"]["integrated_lufs"] - quiet["loudness"]["integrated_lufs"], QUIET_DB,
                        abs_tol=0.2), (loud["loudness"], quiet["loudness"])
    assert math.isclose(gains["quiet"] - gains["loud"], QUIET_DB, abs_tol=0.2), gains
    assert gains["loud"] < -3 and gains["quiet"] > 3, gains  # a cut and a boost: the page must do both
    order = [loud["id"], quiet["id"], older["id"]]
    report = drive_checks({"url": f"{base}/", "checks": "loudness", "assets": order, "rung": RUNG,
                           "from": FROM_S, "seconds": SECONDS}, tmp_path, timeout_s=200)
    r = report["result"]
    why = _why(report)
    assert report["driverError"] is None and r is not None, why
    assert r["ok"], why
    assert page_errors(r["errors"]) == [], why
    assert r["switchDefault"] is True, why  # normalisation is on unless the listener turns it off

    # Before playback: each card says the gain it will get.
    cards = {c["id"]: c for c in r["listing"]["cards"]}
    for key, asset in assets.items():
        assert cards[asset["id"]]["gain"] == decibels(gains[key]), (key, cards[asset["id"]], why)

    plays = {p["id"]: p for p in r["plays"]}
    level = {k: (plays[a["id"]]["on"]["rmsDb"], plays[a["id"]]["off"]["rmsDb"]) for k, a in assets.items()}
    figures = {k: {"on_db": round(on, 2), "off_db": round(off, 2), "gain_db": gains[k]} for k, (on, off) in level.items()}
    record_property("output_rms_db", figures)
    print(f"\noutput RMS after the GainNode, {SECONDS:g} s from {FROM_S:g} s on {RUNG}: {figures}")
    for key, p in ((k, plays[a["id"]]) for k, a in assets.items()):
        for which in ("on", "off"):  # each measurement covered the stretch, and heard sound
            m = p[which]
            assert m["windows"] >= 100 and m["to"] - m["from"] >= SECONDS - 0.2, (key, which, m, why)
            assert m["rmsDb"] > -60, (key, which, m, why)  # not the silence of a suspended or muted graph
    on_spread = max(on for on, _ in level.values()) - min(on for on, _ in level.values())
    assert on_spread <= ON_TOLERANCE_DB, figures  # levelled: within 1 LU
    off_gap = level["loud"][1] - level["quiet"][1]
    assert abs(off_gap - QUIET_DB) <= OFF_TOLERANCE_DB, figures  # the control: unlevelled, 10 dB apart
    assert abs(level["older"][0] - level["quiet"][0]) <= 0.5, figures  # the page's own gain is the pipeline's

    for key, asset in assets.items():
        p = plays[asset["id"]]
        # The gain heard is the gain shown: on minus off over the same stretch of the same asset.
        assert abs((level[key][0] - level[key][1]) - gains[key]) <= APPLIED_TOLERANCE_DB, (key, figures)
        # What the page says while it plays, and what its GainNode holds.
        on, off = p["onState"], p["offState"]
        assert on["playing"] == RUNG and on["switchOn"], (key, on, why)
        assert math.isclose(on["applied"], gains[key], abs_tol=0.006), (key, on, why)
        assert math.isclose(on["nodeGain"], 10 ** (gains[key] / 20), rel_tol=1e-3), (key, on, why)
        assert f"gain {decibels(gains[key])}" in on["now"] and f"gain {decibels(gains[key])}" in on["level"], on
        assert asset["tags"]["title"] in on["level"], on
        assert not off["switchOn"] and off["applied"] == 0 and "normalisation off" in off["now"], (key, off, why)
        assert off["gain"].startswith("off"), off


def test_catalog_search_and_paging(site, tmp_path: Path) -> None:
    base, assets = site
    loud, quiet, older = assets["loud"], assets["quiet"], assets["older"]
    searches = [{"q": "10 dB DOWN", "want": [quiet["id"]]},  # title, any case
                {"q": "quiet ones", "want": [quiet["id"], older["id"]]},  # artist (the copy keeps it)
                {"q": "groove", "want": [loud["id"], quiet["id"]]},  # two of three on the first page of 2
                {"q": "nothing like it", "want": []},
                {"q": "older descriptor", "want": [older["id"]]}]
    report = drive_checks({"url": f"{base}/?per=2", "checks": "catalog", "searches": searches}, tmp_path,
                          timeout_s=120)
    r = report["result"]
    why = _why(report)
    assert report["driverError"] is None and r is not None, why
    assert r["ok"], why
    assert page_errors(r["errors"]) == [], why

    first, second, back = r["first"], r["second"], r["back"]
    assert [c["id"] for c in first["cards"]] == [loud["id"], quiet["id"]], why  # publishing order, 2 a page
    assert (first["range"], first["prevDisabled"], first["nextDisabled"]) == ("1–2 of 3", True, False), first
    assert [c["id"] for c in second["cards"]] == [older["id"]] and second["offset"] == "2", second
    assert (second["range"], second["prevDisabled"], second["nextDisabled"]) == ("3–3 of 3", False, True), second
    assert "offset=2" in second["search"], second  # the URL says where the listener is
    assert [c["id"] for c in back["cards"]] == [loud["id"], quiet["id"]], back

    # Every column is filled before anything plays, from the catalog alone: no manifest was fetched.
    assert r["mediaBeforePlay"] == [], r["mediaBeforePlay"]
    shown = {c["id"]: c for c in first["cards"] + second["cards"]}
    for asset in assets.values():
        c = shown[asset["id"]]
        assert c["title"] == asset["tags"]["title"] and c["artist"] == asset["tags"]["artist"], c
        assert c["duration"] and c["master"] and "LUFS" in c["loudness"] and c["gain"].endswith("dB"), c
        assert [row["name"] for row in c["rows"]] == [x["name"] for x in asset["renditions"]], c
        for row, rendition in zip(c["rows"], asset["renditions"]):
            assert all(row[k] for k in ("codec", "nominal", "channels")), row
            # The declared peak is the descriptor's figure; a dash only where the descriptor has none.
            assert row["peak"] == (kbps(rendition["bandwidth"]) if "bandwidth" in rendition else "—"), (row, rendition)
    assert all(row["peak"] == "—" for row in shown[older["id"]]["rows"])

    for s in r["searches"]:
        seen = s["seen"]
        assert [c["id"] for c in seen["cards"]] == s["want"], (s["q"], seen)
        assert seen["q"] == s["q"].strip() and "q=" in seen["search"], seen
        if not s["want"]:
            assert "Nothing matches" in seen["status"], seen
    groove = next(s for s in r["searches"] if s["q"] == "groove")["seen"]
    assert groove["total"] == "3" and groove["range"] == "1–2 of 3 found" and not groove["nextDisabled"], groove
    # Typing is debounced: a search of 10 characters is far fewer than 10 requests.
    counts = [s["apiRequests"] for s in r["searches"]]
    assert all(b - a <= 3 for a, b in zip([3, *counts], counts)), counts
