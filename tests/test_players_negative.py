"""Negative controls: the player tests can fail. A deliberately broken copy of a published asset
(a missing segment, a corrupt init segment, a wrong CODECS string) is served by the same origin,
and the harness must report the failure with the player's own error, not play on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures_players import Origin, drive, explain, scenario

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PLAYERS = [("hls", "hls"), ("dash", "dash"), ("shaka", "hls")]
PLAYER_IDS = ["hlsjs-hls", "dashjs-dash", "shaka-hls"]


def rung_dirs(asset: Path) -> list[Path]:
    return sorted(p for p in asset.iterdir() if p.is_dir() and (p / "init.mp4").exists())


def drop_second_segment(asset: Path) -> None:
    """Every rung loses the segment covering 6.4-12.8 s: a 404 mid-stream."""
    for d in rung_dirs(asset):
        (d / "seg-00002.m4s").unlink()


def corrupt_init(asset: Path) -> None:
    """Every rung's init segment keeps its size and ftyp, but the moov payload becomes garbage."""
    for d in rung_dirs(asset):
        data = bytearray((d / "init.mp4").read_bytes())
        moov = data.index(b"moov")
        for i in range(moov + 4, len(data)):
            data[i] = (i * 37) & 0xFF
        (d / "init.mp4").write_bytes(bytes(data))


def swap_codecs(asset: Path) -> None:
    """The manifests announce AAC rungs as Opus and the Opus rung as AAC (only the CODECS and
    @codecs attributes change; the media are untouched)."""
    def swap(m: re.Match[str]) -> str:
        value = m.group(2)
        value = "opus" if value.startswith("mp4a") else "mp4a.40.2" if value.lower() == "opus" else value
        return f'{m.group(1)}"{value}"'

    for name in ("master.m3u8", "manifest.mpd"):
        path = asset / name
        path.write_text(re.sub(r'(CODECS=|codecs=)"([^"]*)"', swap, path.read_text()))


FAULTS: dict[str, Callable[[Path], None]] = {
    "missing_segment": drop_second_segment,
    "corrupt_init": corrupt_init,
    "wrong_codecs": swap_codecs,
}


def player_error(player: str, fault: str, errors: list[dict[str, Any]]) -> bool:
    """The error each player reports for each fault, as the player names it."""
    if player == "hls":
        details = {e.get("details") for e in errors}
        if fault == "missing_segment":
            return any(e.get("details") == "fragLoadError" and e.get("status") == 404 for e in errors)
        return bool(details & {"bufferAppendError", "bufferAppendingError", "fragParsingError", "mediaSourceRequiresReset"})
    if player == "dash":
        return any(e.get("player") == "dash.js" and e.get("code") is not None for e in errors)
    # Shaka: shaka.util.Error codes, e.g. 1001 BAD_HTTP_STATUS, 3015/3016 media source / media element errors.
    codes = {e.get("code") for e in errors if e.get("player") == "shaka"}
    if fault == "missing_segment":
        return 1001 in codes
    return bool(codes & {3014, 3015, 3016, 3017})


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize(("player", "protocol"), PLAYERS, ids=PLAYER_IDS)
def test_broken_asset_fails_with_the_players_error(player_origin: Origin, tmp_path: Path, player: str,
                                                   protocol: str, fault: str) -> None:
    asset_id, folder = player_origin.broken_copy("tones", f"{fault}-{player}-{protocol}")
    FAULTS[fault](folder)
    manifest = "master.m3u8" if protocol == "hls" else "manifest.mpd"
    report = drive(scenario(f"{player_origin.base}/assets/{asset_id}/{manifest}", player), tmp_path, timeout_s=60)
    why = explain(report)
    r = report["result"]
    assert report["driverError"] is None and r is not None, why
    assert not r["ok"] and r["failedStep"], why
    assert r["errors"], why
    assert player_error(player, fault, r["errors"]), why


@pytest.mark.parametrize(("player", "protocol"), PLAYERS, ids=PLAYER_IDS)
def test_without_cors_headers_players_are_locked_out(player_origin: Origin, tmp_path: Path, player: str,
                                                     protocol: str) -> None:
    """The harness page is cross-origin for real: with the origin's Access-Control-* headers removed
    from every answer (the bytes are otherwise the same), the player cannot even read the manifest."""
    spec = scenario(player_origin.url("tones", "segmented", protocol), player, steps=["start"])
    report = drive({**spec, "stripCors": True}, tmp_path, timeout_s=60)
    why = explain(report)
    r = report["result"]
    assert report["driverError"] is None and r is not None, why
    assert report["browser"]["strippedCors"] > 0, why
    assert not r["ok"] and r["failedStep"] == "start" and r["errors"], why
    assert any("CORS" in line or "Access-Control-Allow-Origin" in line for line in report["browser"]["console"]), why
