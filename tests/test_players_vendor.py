"""The demo page's player is vendored (origin/static/vendor, by scripts/vendor-players.sh) so that
`make run` needs no npm: the committed copy must be the build the browser tests exercise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENDORED = REPO / "origin" / "static" / "vendor"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_vendored_player_is_the_pinned_npm_build() -> None:
    """origin/static/vendor/hls.min.js is byte-identical to the build pinned in package-lock.json,
    so `make run` serves exactly the player the browser tests exercised (scripts/vendor-players.sh)."""
    pinned = REPO / "tests" / "players" / "node_modules" / "hls.js"
    if not pinned.is_dir():
        pytest.fail("tests/players/node_modules is missing: run scripts/test-deps.sh (npm ci)", pytrace=False)
    lock = json.loads((REPO / "tests" / "players" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/hls.js"]["version"]
    assert json.loads((pinned / "package.json").read_text())["version"] == version
    assert sha256(VENDORED / "hls.min.js") == sha256(pinned / "dist" / "hls.min.js")
    assert f"hls.js {version} " in (VENDORED / "NOTICE.txt").read_text()
    assert "Apache License" in (VENDORED / "Apache-2.0.txt").read_text()
