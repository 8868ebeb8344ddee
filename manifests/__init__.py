"""MANIFESTS stage: HLS playlists and DASH MPDs rendered from what the packager wrote.

Manifests observe the media (shaka-packager's model): every figure in them,
durations, byte ranges and bit rates, comes from the packaged segments.
All URIs are relative, so a signed-URL path prefix is inherited.
"""

from __future__ import annotations

from pathlib import Path

from manifests import dash, hls
from manifests.errors import ManifestError
from tonearm.core.layouts import LAYOUTS
from tonearm.core.model import MasterInfo, PackagedRendition

__all__ = ("write_manifests",)


def write_manifests(out_dir: Path, layouts: dict[str, list[PackagedRendition]], info: MasterInfo) -> dict[str, str]:
    """Write the HLS and DASH manifests of every layout; return their paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    written: dict[str, str] = {}
    for layout, renditions in layouts.items():
        if layout not in LAYOUTS:
            raise ManifestError(f"unknown layout {layout!r}")
        if not renditions:
            raise ManifestError(f"layout {layout!r} has no renditions")
        empty = [p.rung.name for p in renditions if not p.segments]
        if empty:
            raise ManifestError(f"renditions without segments: {', '.join(empty)}")
        place = LAYOUTS[layout]
        base = out_dir / place.folder if place.folder else out_dir
        base.mkdir(parents=True, exist_ok=True)
        uris = {}
        for p in renditions:
            uri = place.media_playlist(p.rung.name)
            (base / uri).parent.mkdir(parents=True, exist_ok=True)
            (base / uri).write_text(hls.media_playlist(p), encoding="utf-8")
            uris[p.rung.name] = uri
        (out_dir / place.hls_master).write_text(hls.master_playlist(renditions, uris), encoding="utf-8")
        (out_dir / place.dash_manifest).write_text(dash.mpd(renditions, info, layout=layout), encoding="utf-8")
        written.update(place.manifest_keys())
    return written
