"""MANIFESTS stage: HLS playlists and DASH MPDs rendered from what the packager wrote.

Manifests observe the media (shaka-packager's model): every figure in them,
durations, byte ranges and bit rates, comes from the packaged segments.
All URIs are relative, so a signed-URL path prefix is inherited.

Loudness to the player: the master's EBU R128 figures (measured at ingest) and
the normalisation gain to ``[ladder] loudness_target`` travel with the stream,
so a player can normalise without a catalog call (rule and keys: manifests.loudness):

- HLS multivariant playlist: one ``EXT-X-SESSION-DATA`` per known figure,
  ``DATA-ID="org.tonearm.loudness.<key>"`` with the number as ``VALUE``, e.g.
  ``#EXT-X-SESSION-DATA:DATA-ID="org.tonearm.loudness.gain_db",VALUE="4.3"``
  (keys ``integrated_lufs``, ``loudness_range_lu``, ``true_peak_dbtp``,
  ``target_lufs``, ``gain_db``; an unknown figure has no tag).  hls.js hands them
  to the app as ``data.sessionData[DATA-ID].VALUE`` (MANIFEST_LOADED), Shaka as
  ``sessiondata`` events (``id``, ``value``).
- DASH MPD: on every AdaptationSet ``<SupplementalProperty
  schemeIdUri="urn:org:tonearm:loudness:2026" value="{...}"/>``, the value a
  compact JSON object of the same keys (null where unknown); dash.js exposes it
  as ``mediaInfo.supplementalProperties``.
- The init segment (packager): the ISOBMFF ``ludt``/``tlou`` box; the gain is
  not part of that box (it has no field for it), the measurements are.
"""

from __future__ import annotations

from pathlib import Path

from manifests import dash, hls
from manifests.bandwidth import average_bandwidth, peak_bandwidth
from manifests.errors import ManifestError
from manifests.loudness import Normalisation, normalisation
from manifests.protection import offers, scheme_of
from tonearm.core.config import DEFAULT_LOUDNESS_TARGET
from tonearm.core.layouts import LAYOUTS
from tonearm.core.model import MasterInfo, PackagedRendition

__all__ = ("write_manifests", "normalisation", "Normalisation", "peak_bandwidth", "average_bandwidth")


def write_manifests(out_dir: Path, layouts: dict[str, list[PackagedRendition]], info: MasterInfo, *,
                    loudness_target: float = DEFAULT_LOUDNESS_TARGET) -> dict[str, str]:
    """Write the HLS and DASH manifests of every layout; return their paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    loudness = normalisation(info.loudness, loudness_target)
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
        prot, aid = scheme_of(renditions), info.asset_id
        keys = place.manifest_keys()
        if offers(prot, "hls"):
            uris = {}
            for p in renditions:
                uri = place.media_playlist(p.rung.name)
                rel = f"{place.folder}/{uri}" if place.folder else uri
                (base / uri).parent.mkdir(parents=True, exist_ok=True)
                (base / uri).write_text(hls.media_playlist(p, asset_id=aid, rel=rel), encoding="utf-8")
                uris[p.rung.name] = uri
            (out_dir / place.hls_master).write_text(
                hls.master_playlist(renditions, uris, loudness, asset_id=aid, rel=place.hls_master), encoding="utf-8")
        if offers(prot, "dash"):
            (out_dir / place.dash_manifest).write_text(
                dash.mpd(renditions, info, layout=layout, loudness=loudness),
                encoding="utf-8")
        written.update({k: v for k, v in keys.items() if offers(prot, k.split("_", 1)[0])})
    return written
