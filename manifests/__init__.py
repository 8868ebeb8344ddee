"""MANIFESTS stage: HLS playlists and DASH MPDs rendered from what the packager wrote.

Manifests observe the media (shaka-packager's model): every figure in them,
durations, byte ranges and bit rates, comes from the packaged segments.
All URIs are relative, so a signed-URL path prefix is inherited.
"""

from __future__ import annotations

from pathlib import Path

from manifests import dash, hls
from tonearm.model import MasterInfo, PackagedRendition

__all__ = ("write_manifests",)

# layout -> (folder under out_dir, key prefix in the returned map)
_PLACES = {"segmented": ("", ""), "single": ("single", "_single")}


def write_manifests(out_dir: Path, layouts: dict[str, list[PackagedRendition]], info: MasterInfo) -> dict[str, str]:
    """Write the HLS and DASH manifests of every layout; return their paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    written: dict[str, str] = {}
    for layout, renditions in layouts.items():
        if layout not in _PLACES:
            raise ValueError(f"unknown layout {layout!r}")
        if not renditions:
            raise ValueError(f"layout {layout!r} has no renditions")
        empty = [p.rung.name for p in renditions if not p.segments]
        if empty:
            raise ValueError(f"renditions without segments: {', '.join(empty)}")
        folder, suffix = _PLACES[layout]
        base = out_dir / folder if folder else out_dir
        base.mkdir(parents=True, exist_ok=True)
        uris = {}
        for p in renditions:
            uri = f"{p.rung.name}/index.m3u8" if layout == "segmented" else f"{p.rung.name}.m3u8"
            (base / uri).parent.mkdir(parents=True, exist_ok=True)
            (base / uri).write_text(hls.media_playlist(p), encoding="utf-8")
            uris[p.rung.name] = uri
        (base / "master.m3u8").write_text(hls.master_playlist(renditions, uris), encoding="utf-8")
        (base / "manifest.mpd").write_text(dash.mpd(renditions, info, layout=layout), encoding="utf-8")
        prefix = f"{folder}/" if folder else ""
        written[f"hls{suffix}"] = f"{prefix}master.m3u8"
        written[f"dash{suffix}"] = f"{prefix}manifest.mpd"
    return written
