"""Protected assets for the protection tests, built once per session (``protected`` in conftest.py).

One 12 s tone master per scheme (the same audio, a different title so each has its own asset id),
published by the real pipeline with ``[protection] scheme`` = none, cbcs, cenc and aes-128, and a
real ``tonearm serve`` subprocess over them with a signing key, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures_players import TONES, ingest, make_tone_master, running_origin

from origin.signing import sign
from tonearm.core.config import Config, OriginConfig, ProtectionConfig, StorageConfig
from tonearm.core.keys import ContentKey, open_keystore

SIGNING_KEY = "protection-tests-signing-key-0123456789abcdef"
SCHEMES = ("none", "cbcs", "cenc", "aes-128")
SECONDS = 12.0  # two segments of 6.4 s: a switch, a seek into the second, the end
PROTECTED_TONES = tuple((a, min(b, SECONDS), hz) for a, b, hz in TONES if a < SECONDS)


def config(data: Path, scheme: str = "none") -> Config:
    return Config(storage=StorageConfig(root=data), origin=OriginConfig(signing_key=SIGNING_KEY),
                  protection=ProtectionConfig(scheme=scheme))


@dataclass(frozen=True)
class Protected:
    data: Path
    assets: dict[str, dict[str, Any]]  # scheme -> descriptor + "id"
    base: str  # the running origin

    def key(self, scheme: str) -> ContentKey:
        key = open_keystore(self.data).get(self.assets[scheme]["id"])
        assert key is not None
        return key

    def published(self, scheme: str) -> Path:
        return self.data / "published" / self.assets[scheme]["id"]

    def token(self, asset_id: str, ttl: int = 600) -> str:
        return sign(SIGNING_KEY, asset_id, int(time.time()) + ttl)

    def signed(self, scheme: str, rel: str, asset_id: str | None = None) -> str:
        aid = asset_id or self.assets[scheme]["id"]
        return f"{self.base}/s/{self.token(aid)}/assets/{aid}/{rel}"

    def licence(self, asset_id: str, *, signed: bool = True) -> str:
        prefix = f"/s/{self.token(asset_id)}" if signed else ""
        return f"{self.base}{prefix}/keys/{asset_id}/clearkey"


def build(root: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    data = root / "data"
    assets = {}
    for scheme in SCHEMES:
        master = make_tone_master(root / f"{scheme}.flac", title=f"Protected tones ({scheme})", seconds=SECONDS)
        assets[scheme] = ingest(config(data, scheme), master)
    return data, assets


def serving(data: Path, log: Path) -> contextlib.AbstractContextManager[str]:
    """``tonearm --data DATA serve`` with the tests' signing key (from the environment, as operators set it)."""
    return running_origin(data, log, env={"TONEARM_SIGNING_KEY": SIGNING_KEY})
