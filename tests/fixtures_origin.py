"""Published trees for origin tests.

``make_ffmpeg_asset`` writes the published layout with ffmpeg's own HLS fMP4
muxer (independent of our packager): segmented rung, single-file rung with
EXT-X-BYTERANGE, a master playlist, an MPD and the descriptor.
``publish_real_asset`` runs the real pipeline on a short generated master.
``plant_secrets`` puts files outside the published tree that must never leak.
Import explicitly: ``from fixtures_origin import ...``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from tonearm.core.storage import DESCRIPTOR

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
SECRET = b"TOP-SECRET-tonearm-must-never-serve-this-0123456789"

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS="mp4a.40.2"
{rel}
"""

MPD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S"
     minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0">
    <AdaptationSet contentType="audio" mimeType="audio/mp4" segmentAlignment="true">
      <Representation id="aac_128k" codecs="mp4a.40.2" bandwidth="140000" audioSamplingRate="48000">
        <SegmentTemplate timescale="48000" initialization="aac_128k/init.mp4"
                         media="aac_128k/seg-$Number%05d$.m4s" startNumber="1" duration="96000"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


def asset_id_for(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hls(out_dir: Path, seconds: float, extra: list[str], playlist: str, freq: int) -> None:
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"sine=frequency={freq}:sample_rate=48000:duration={seconds}", "-ac", "2",
            "-c:a", "aac", "-b:a", "128k", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-start_number", "1", *extra, playlist]
    subprocess.run(argv, check=True, timeout=120, cwd=out_dir)


def make_ffmpeg_asset(published: Path, name: str = "fixture", *, seconds: float = 6.0, freq: int = 440) -> str:
    """Write a published asset under ``published/<id>/`` and return its id (descriptor written last)."""
    asset_id = asset_id_for(name)
    staging = published.parent / f"staging-{asset_id}"
    (staging / "aac_128k").mkdir(parents=True, exist_ok=True)
    (staging / "single").mkdir(parents=True, exist_ok=True)
    _hls(staging, seconds, ["-hls_fmp4_init_filename", "init.mp4",
                            "-hls_segment_filename", "aac_128k/seg-%05d.m4s"], "aac_128k/index.m3u8", freq)
    _hls(staging, seconds, ["-hls_flags", "single_file", "-hls_segment_filename", "single/aac_128k.mp4"],
         "single/aac_128k.m3u8", freq)
    (staging / "master.m3u8").write_text(MASTER.format(rel="aac_128k/index.m3u8"))
    (staging / "single" / "master.m3u8").write_text(MASTER.format(rel="aac_128k.m3u8"))
    (staging / "manifest.mpd").write_text(MPD)
    (staging / "single" / "manifest.mpd").write_text(MPD)
    descriptor = {"asset_id": asset_id, "source_name": f"{name}.flac", "duration_s": seconds,
                  "manifests": {"hls": "master.m3u8", "dash": "manifest.mpd",
                                "hls_single": "single/master.m3u8", "dash_single": "single/manifest.mpd"},
                  "renditions": [{"name": "aac_128k", "codec": "aac", "codecs": "mp4a.40.2"}]}
    (staging / DESCRIPTOR).write_text(json.dumps(descriptor, indent=2))
    published.mkdir(parents=True, exist_ok=True)
    staging.rename(published / asset_id)
    return asset_id


def add_big_media(published: Path, asset_id: str, mb: int = 16, name: str = "single/big.mp4") -> Path:
    """A media file larger than the origin's per-file cache limit, so it is always streamed from disk."""
    import os

    path = published / asset_id / name
    path.write_bytes(os.urandom(mb * 1024 * 1024))
    return path


def plant_secrets(data_root: Path) -> list[Path]:
    """Secret files next to and above the published tree, plus symlinks pointing at them from inside it."""
    places = [data_root / "secret.m4s", data_root.parent / "secret.m4s", data_root / "staging" / "secret.m4s",
              data_root / "published" / "secret.m4s"]
    for p in places:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(SECRET)
    return places


def publish_real_asset(data_root: Path, *, seconds: float = 6.0) -> str:
    """Run the real pipeline (ingest, transcode, packager, manifests, publish) on a short master."""
    from tonearm.app.pipeline import Context, process
    from tonearm.core.config import load

    master = data_root.parent / "master.flac"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"aevalsrc=0.3*sin(2*PI*440*t)*(0.6+0.4*sin(2*PI*0.5*t))|0.3*sin(2*PI*660*t):s=44100:d={seconds}",
                    "-c:a", "flac", str(master)], check=True, timeout=120)
    cfg = load(env={}, overrides={"storage": {"root": str(data_root)}})
    result = process(Context.from_config(cfg), master)
    if not result.ok:
        raise RuntimeError(f"pipeline did not publish the fixture master: {result.to_json()}")
    return result.asset_id
