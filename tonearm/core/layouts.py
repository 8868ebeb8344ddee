"""The two published layouts and every file name in them, defined once.

The packager writes these names, the manifest writers refer to them, the
origin recognises them, config validation keeps rung names from colliding
with them, and the catalog API builds playback paths from them.

``segmented``::

    master.m3u8  manifest.mpd  <rung>/index.m3u8  <rung>/init.mp4  <rung>/seg-00001.m4s ...

``single`` (one fMP4 per rung, byte ranges; DASH on-demand profile)::

    single/master.m3u8  single/manifest.mpd  single/<rung>.m3u8  single/<rung>.mp4

and ``asset.json``, the descriptor, written last: an asset exists once it does.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("Layout", "LAYOUTS", "layout", "DESCRIPTOR", "RESERVED_RUNG_NAMES", "SEGMENT_TEMPLATE", "INIT_NAME",
           "MANIFEST_SUFFIXES")

DESCRIPTOR = "asset.json"
SEGMENT_TEMPLATE = "seg-%05d.m4s"  # printf form; DASH's $Number%05d$ is derived from it
INIT_NAME = "init.mp4"
MANIFEST_SUFFIXES = (".m3u8", ".mpd")


@dataclass(frozen=True)
class Layout:
    name: str
    folder: str  # "" for the asset's top level
    descriptor_suffix: str  # key suffix in asset.json's "manifests" map: "hls", "hls_single", ...
    single_file: bool

    def _at(self, rel: str) -> str:
        return f"{self.folder}/{rel}" if self.folder else rel

    @property
    def hls_master(self) -> str:
        return self._at("master.m3u8")

    @property
    def dash_manifest(self) -> str:
        return self._at("manifest.mpd")

    def media_playlist(self, rung: str) -> str:
        """The rung's HLS playlist, relative to the layout's folder (as the master playlist refers to it)."""
        return f"{rung}.m3u8" if self.single_file else f"{rung}/index.m3u8"

    def media_file(self, rung: str) -> str:
        """Single-file layout: the rung's one fMP4, relative to the layout's folder."""
        return f"{rung}.mp4"

    def manifest_keys(self) -> dict[str, str]:
        """``{"hls": rel, "dash": rel}`` keyed as asset.json lists them (``hls_single``, ...)."""
        return {"hls" + self.descriptor_suffix: self.hls_master, "dash" + self.descriptor_suffix: self.dash_manifest}


LAYOUTS: dict[str, Layout] = {
    "segmented": Layout("segmented", "", "", single_file=False),
    "single": Layout("single", "single", "_single", single_file=True),
}

# Rung names that would collide with layout paths: single/ (the single-file folder) and
# single/master.m3u8 (its multivariant playlist next to single/<rung>.m3u8).
RESERVED_RUNG_NAMES = frozenset({lay.folder for lay in LAYOUTS.values() if lay.folder} | {"master"})


def layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"layout {name!r} is not one of {', '.join(LAYOUTS)}") from None
