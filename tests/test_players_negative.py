"""Negative controls: the player tests can fail. A deliberately broken copy of a published asset
(a missing segment, a corrupt init segment, a wrong CODECS string) is served by the same origin,
and the harness must report the failure with the player's own error, not play on.

Video.js (VHS) reports a failed segment request as a warning and a rendition exclusion, never as a
player error with its default maxPlaylistRetries (Infinity): it retries the renditions in turn for
ever. A corrupt init segment crashes it (an uncaught TypeError) without any error: a strict xfail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_players import Origin, drive, explain, player_options, scenario

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PLAYERS = [("hls", "hls"), ("dash", "dash"), ("shaka", "hls"), ("videojs", "hls")]
PLAYER_IDS = ["hlsjs-hls", "dashjs-dash", "shaka-hls", "videojs-hls"]

# VHS 3.17.5 (Video.js 8.24.1) probes the init segment for its tracks; with the moov made garbage it
# finds none, segment.map.tracks stays undefined, and handleSegmentBytes reads tracks.text from it
# inside the transmuxer's message callback: "TypeError: Cannot read properties of undefined (reading
# 'text')", uncaught. No error event, no warning; playback never starts. hls.js, dash.js and Shaka
# report their own errors on the same broken asset (below).
VIDEOJS_CORRUPT_INIT = "VHS 3.17.5: a corrupt init segment throws an uncaught TypeError (map.tracks undefined), no player error"


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
        if fault == "cors":
            return "manifestLoadError" in details
        return bool(details & {"bufferAppendError", "bufferAppendingError", "fragParsingError", "mediaSourceRequiresReset"})
    if player == "dash":
        return any(e.get("player") == "dash.js" and e.get("code") is not None for e in errors)
    if player == "videojs":
        vjs = [e for e in errors if e.get("player") == "video.js"]
        if fault == "missing_segment":  # VHS's own warning names the segment, then excludes the rendition
            warned = any("request errored at URL" in e.get("message", "") and "/seg-00002.m4s" in e.get("message", "") for e in vjs)
            return warned and any(e.get("source") == "vhs excludeplaylist" for e in vjs)
        if fault == "cors":  # HLS: VHS ends the MediaSource with a network error: MEDIA_ERR_SRC_NOT_SUPPORTED
            return any(e.get("code") in (2, 4) for e in vjs)
        return any(e.get("code") in (3, 4) and e.get("errorType") == "streamingfailedtoappendsegment" for e in vjs)
    # Shaka: shaka.util.Error codes, e.g. 1001 BAD_HTTP_STATUS, 3015/3016 media source / media element errors.
    codes = {e.get("code") for e in errors if e.get("player") == "shaka"}
    if fault == "missing_segment":
        return 1001 in codes
    if fault == "cors":
        return 1002 in codes
    return bool(codes & {3014, 3015, 3016, 3017})


class VideojsCorruptInitUncaught(AssertionError):
    """The known VHS failure, and only it, makes the xfail below expected."""


CASES = [
    pytest.param(player, protocol, fault, id=f"{pid}-{fault}", marks=(
        [pytest.mark.xfail(strict=True, raises=VideojsCorruptInitUncaught, reason=VIDEOJS_CORRUPT_INIT)]
        if (player, fault) == ("videojs", "corrupt_init") else []))
    for fault in sorted(FAULTS) for (player, protocol), pid in zip(PLAYERS, PLAYER_IDS)
]


@pytest.mark.parametrize(("player", "protocol", "fault"), CASES)
def test_broken_asset_fails_with_the_players_error(player_origin: Origin, tmp_path: Path, player: str,
                                                   protocol: str, fault: str) -> None:
    asset_id, folder = player_origin.broken_copy("tones", f"{fault}-{player}-{protocol}")
    FAULTS[fault](folder)
    manifest = "master.m3u8" if protocol == "hls" else "manifest.mpd"
    spec = scenario(f"{player_origin.base}/assets/{asset_id}/{manifest}", player, **player_options(player))
    report = drive(spec, tmp_path, timeout_s=60)
    why = explain(report)
    r = report["result"]
    assert report["driverError"] is None and r is not None, why
    assert not r["ok"] and r["failedStep"], why
    assert r["errors"], why
    if (player, fault) == ("videojs", "corrupt_init") and not player_error(player, fault, r["errors"]):
        uncaught = [e for e in r["errors"] if e.get("source") == "uncaught"]
        assert r["failedStep"] == "start" and uncaught and "reading 'text'" in uncaught[0]["message"], why
        assert not any(e.get("player") == "video.js" for e in r["errors"]), why
        raise VideojsCorruptInitUncaught(uncaught[0]["message"])
    assert player_error(player, fault, r["errors"]), why
    if (player, fault) == ("videojs", "missing_segment"):  # warnings only: VHS never gives up by default,
        # playback stalls at the gap (6.4 s) and the run ends on a wait timing out, not on an error
        assert not any(e.get("player") == "video.js" and e.get("code") is not None for e in r["errors"]), why
        assert r["failure"].startswith("timed out"), why
        assert r["final"]["currentTime"] < 6.5 or r["failedStep"] == "seek_middle", why  # or the seek into it


@pytest.mark.parametrize(("player", "protocol"), PLAYERS, ids=PLAYER_IDS)
def test_without_cors_headers_players_are_locked_out(player_origin: Origin, tmp_path: Path, player: str,
                                                     protocol: str) -> None:
    """The harness page is cross-origin for real: with the origin's Access-Control-* headers removed
    from every answer (the bytes are otherwise the same), the player cannot even read the manifest,
    and says so with its own error."""
    spec = scenario(player_origin.url("tones", "segmented", protocol), player, steps=["start"])
    report = drive({**spec, "stripCors": True}, tmp_path, timeout_s=60)
    why = explain(report)
    r = report["result"]
    assert report["driverError"] is None and r is not None, why
    assert report["browser"]["strippedCors"] > 0, why
    assert not r["ok"] and r["failedStep"] == "start" and r["errors"], why
    assert any("CORS" in line or "Access-Control-Allow-Origin" in line for line in report["browser"]["console"]), why
    assert player_error(player, "cors", r["errors"]), why
