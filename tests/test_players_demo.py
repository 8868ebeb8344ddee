"""The demo page as ``make run`` serves it: the demo master published by the real pipeline, the page
and its vendored hls.js served by ``tonearm serve``, used in headless Chromium like a listener would:
the catalog lists the asset, it plays, every rung can be picked (and "Automatic" given back), and
the page shows what is playing.  The screenshot lands in tmp_path; with TONEARM_UPDATE_SCREENSHOT=1
it also replaces docs/demo-page.png (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from fixtures_players import drive, ingest, running_origin

from tonearm.app.demo import write_demo_master
from tonearm.core.config import Config, StorageConfig

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "demo-page.png"


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("demo-site")
    cfg = Config(storage=StorageConfig(root=root / "data"))
    asset = ingest(cfg, write_demo_master(root / "demo", cfg))
    with running_origin(cfg.data_dir, root / "origin.log") as base:
        yield base, asset


def test_demo_page_lists_plays_and_switches(demo_site: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base, asset = demo_site
    shot = tmp_path / "demo-page.png"
    report = drive({"mode": "demo", "url": f"{base}/", "asset": asset["id"], "screenshot": str(shot)}, tmp_path,
                   timeout_s=120)
    r = report["result"]
    why = str({k: report.get(k) for k in ("result", "driverError", "browser")})[:6000]
    assert report["driverError"] is None and r is not None, why
    assert r["ok"], why
    assert r["errors"] == [], why

    [card] = [c for c in r["listing"] if c["id"] == asset["id"]]  # the demo asset is listed, with its facts
    assert card["title"] == asset["tags"]["title"] and card["artist"] == asset["tags"]["artist"], why
    seconds = round(asset["duration_s"])
    assert card["duration"] == f"{seconds // 60}:{seconds % 60:02d}", why
    assert f"{asset['loudness']['integrated_lufs']:.1f} LUFS" in card["loudness"], why
    assert [row["rung"] for row in card["rows"]] == [x["name"] for x in asset["renditions"]], why
    # Before a click (no player, no manifest fetch) the declared peak is the descriptor's figure; a dash without one.
    assert [row["peak"] for row in card["rows"]] == [
        f"{int(x['bandwidth'] / 1000 + 0.5)} kb/s" if x.get("bandwidth") else "—" for x in asset["renditions"]], why
    assert [row["rung"] for row in r["peaks"]] == [row["rung"] for row in card["rows"]], why
    assert all(row["peak"].endswith("kb/s") and not row["unplayable"] for row in r["peaks"]), why

    # Every rung was picked and heard (the page's own "now playing" follows hls.js FRAG_CHANGED).
    picked = {p["rung"] for p in r["picks"]}
    assert picked == {x["name"] for x in asset["renditions"]}, why
    for p in r["picks"]:
        assert p["rung"] in p["now"] and "fixed" in p["now"] and p["to"] - p["from"] >= 0.3, why
    auto = next(s for s in r["steps"] if s["name"] == "automatic")
    assert "automatic" in auto["now"] and auto["to"] > auto["from"], why

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", why
    if os.environ.get("TONEARM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
