"""ffmpeg plays a pipeline-published asset through the origin, over plain and signed URLs.

The asset is made by the real pipeline (ingest, transcode, packager,
manifests, publish) from a short generated master; ffmpeg is the HLS/DASH
client, decodes everything to PCM, and the decoded length must match the
master's duration.  The same runs against S3 storage (a real Swift), published by
the pipeline's S3 backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from fixtures_origin import publish_real_asset
from fixtures_servers import start_origin

from origin.signing import sign
from tonearm.app.pipeline import Context, process
from tonearm.core.config import load

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
KEY = "playback-key-0123456789abcdef0123456789"
SECONDS = 5.0
RATE = 48000

# Slow (make test, not make test-fast): pipeline-published assets played by ffmpeg through `tonearm serve`
# subprocesses (disk and S3), plain and signed, about 10 s.
pytestmark = pytest.mark.slow


def decoded_seconds(url: str) -> float:
    """Decode the first audio stream of ``url`` to 48 kHz stereo s16 and measure it."""
    out = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", url, "-map", "0:a:0", "-f", "s16le", "-ac", "2",
         "-ar", str(RATE), "-"],
        capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    return len(out.stdout) / (RATE * 2 * 2)


@pytest.fixture(scope="module")
def local_origin(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("playback") / "data"
    asset = publish_real_asset(data, seconds=SECONDS)
    server = start_origin(data, env={"TONEARM_SIGNING_KEY": KEY})
    yield server, asset, json.loads((data / "published" / asset / "asset.json").read_text())
    server.stop()
    assert "Traceback" not in server.log() and "ERROR" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("which", ["hls", "hls_single", "dash", "dash_single"])
@pytest.mark.parametrize("signed", [False, True])
def test_ffmpeg_plays_through_the_origin(local_origin, which, signed):
    server, asset, descriptor = local_origin
    rel = descriptor["manifests"][which]
    prefix = f"/s/{sign(KEY, asset, int(time.time()) + 600)}" if signed else ""
    got = decoded_seconds(f"{server.base_url}{prefix}/assets/{asset}/{rel}")
    assert abs(got - descriptor["duration_s"]) < 0.05, (got, descriptor["duration_s"])


def test_forged_signature_does_not_play(local_origin):
    server, asset, descriptor = local_origin
    token = sign("wrong-key", asset, int(time.time()) + 600)
    out = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i",
                          f"{server.base_url}/s/{token}/assets/{asset}/{descriptor['manifests']['hls']}",
                          "-f", "null", "-"], capture_output=True, timeout=60)
    assert out.returncode != 0 and b"403" in out.stderr


def test_pipeline_publishes_to_s3_and_ffmpeg_plays(tmp_path, swift_server):
    swift_server.client().create_bucket(Bucket="tonearm-play")
    env = {"TONEARM_STORAGE_BACKEND": "s3", "TONEARM_STORAGE_S3_BUCKET": "tonearm-play",
           "TONEARM_STORAGE_S3_ENDPOINT_URL": swift_server.endpoint}
    data = tmp_path / "data"
    master = tmp_path / "master.flac"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=330:sample_rate=44100:duration={SECONDS}", "-ac", "2", str(master)],
                   check=True, timeout=60)
    cfg = load(env={**env, "TONEARM_DATA": str(data)})
    result = process(Context.from_config(cfg), master)
    assert result.ok, result.to_json()
    assert not (data / "published").exists() or not any((data / "published").iterdir())  # nothing local
    server = start_origin(data, env={**swift_server.env, **env})
    try:
        for key in ("hls", "dash_single"):
            url = f"{server.base_url}/assets/{result.asset_id}/{result.info['manifests'][key]}"
            assert abs(decoded_seconds(url) - result.info["duration_s"]) < 0.05
    finally:
        server.stop()
        assert "Traceback" not in server.log(), server.log()[-3000:]
    assert os.path.isdir(data / "masters")  # masters stay local even when publishing to S3
