"""End to end: masters of different lengths go through the real pipeline (ingest ->
transcode -> package -> manifests -> publish), the real origin serves them on 127.0.0.1,
and ffmpeg (Debian 5.1 and imageio-ffmpeg 9.0) plays every rung of every manifest of both
layouts over HTTP.  m3u8 and mpegdash parse every manifest, and every declared bit rate is
recomputed exactly from the bytes the origin serves."""

from __future__ import annotations

import math
from urllib.parse import urljoin

import m3u8
import pytest
from fixtures_pipeline import (
    MANIFESTS,
    SLACK,
    OriginServer,
    decode_every_rung,
    frames_of,
    get,
    make_varied_master,
    measure_dash,
    measure_hls_media,
    pipeline_config,
    publish,
    stream_rungs,
    xs_seconds,
)
from fixtures_transcode import BINARIES, master_info

# Slow (make test, not make test-fast): the fixture publishes four masters, then every client plays every
# rung of every manifest over HTTP: about a minute.
pytestmark = pytest.mark.slow

LENGTHS = {"clip": 0.5, "short": 9.0, "long": 30.0}  # 0.5 s is shorter than one 6.4 s segment
CLIENTS = sorted(BINARIES)
FRAME = {"mp4a.40.2": 1024, "opus": 960, "fLaC": 4608}  # samples per frame at 48 kHz


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory):
    """Published assets: the three lengths encoded by the system ffmpeg, and the 9 s master
    encoded by imageio-ffmpeg; every ladder has the lossless rung."""
    root = tmp_path_factory.mktemp("playback")
    out = {}
    for name, seconds in LENGTHS.items():
        master = make_varied_master(root / f"{name}.flac", seconds=seconds)
        cfg = pipeline_config(root / "data", lossless=True)
        out[name] = (master, publish(master, cfg))
    master = make_varied_master(root / "imageio.flac", seconds=9.25)  # other bytes, other asset
    cfg9 = pipeline_config(root / "data", ffmpeg=BINARIES["imageio"](), lossless=True)
    out["imageio-encoded"] = (master, publish(master, cfg9))
    with OriginServer(cfg) as server:
        yield server, out


DASH_AAC_FRAME_DROP = ("ffmpeg >= 7 dashdec drops one AAC frame at every segment boundary when the init has an edit "
                       "list (it does the same on DASH written by its own dash muxer)")
HLS_BYTERANGE_STOP = ("ffmpeg >= 7 HLS demuxer over HTTP stops after the first EXT-X-BYTERANGE segment of a single "
                      "file (the same against nginx on the same files, and whether or not the map range is contiguous "
                      "with segment 1; from a local path it decodes everything)")
# imageio-ffmpeg's client is ffmpeg 9.0: both defects show on every master longer than one segment.
KNOWN_DEFECTS = {("imageio", "manifest.mpd"): DASH_AAC_FRAME_DROP, ("imageio", "single/master.m3u8"): HLS_BYTERANGE_STOP}
ONE_SEGMENT = {"clip"}


class KnownClientDefect(AssertionError):
    """A failure that one of the known ffmpeg >= 7 defects explains; only it makes the xfails below expected."""


def _playback_cases() -> list:
    """(asset, manifest, client) for every combination; the ones a known client defect breaks are strict
    expected failures: when ffmpeg fixes it they XPASS, which fails the run.  Any other failure fails."""
    cases = []
    for client in CLIENTS:
        for manifest in MANIFESTS:
            for asset in [*LENGTHS, "imageio-encoded"]:
                defect = KNOWN_DEFECTS.get((client, manifest)) if asset not in ONE_SEGMENT else None
                marks = [pytest.mark.xfail(strict=True, raises=KnownClientDefect, reason=defect)] if defect else []
                cases.append(pytest.param(asset, manifest, client, id=f"{asset}-{manifest}-{client}", marks=marks))
    return cases


@pytest.mark.parametrize(("asset", "manifest", "client"), _playback_cases())
def test_ffmpeg_plays_every_rung(assets, asset: str, manifest: str, client: str) -> None:
    server, published = assets
    master, result = published[asset]
    client_path = BINARIES[client]()
    info = master_info(master)
    expected = frames_of(info.duration_s)
    renditions = {r["name"]: r for r in result.info["renditions"]}
    url = server.url(result.asset_id, manifest)

    rungs = stream_rungs(url)
    assert sorted(rungs) == sorted(renditions) and all(r["channels"] == 2 for r in renditions.values())
    off = decode_every_rung(client_path, url, rungs, renditions, expected)
    defect = _known_client_defect(client_path, manifest, [renditions[r] for r in off], off)
    if defect:
        raise KnownClientDefect(f"{defect}: decoded length minus master length, in samples: {off}")
    assert off == {}, f"decoded length minus master length, in samples: {off}"


def _known_client_defect(client: str, manifest: str, failing: list[dict], off: dict[str, int]) -> str:
    """Name the ffmpeg >= 7 demuxer defect that explains every failure, if one does: the DASH
    one also happens on DASH written by ffmpeg's own muxer; the HLS one is ffmpeg's HTTP byte-range
    reader (it plays the same playlist from disk, and fails the same way against nginx).
    Any other failure stays a failure."""
    from tonearm.core.ffmpeg import locate

    if not failing or int(locate(client).version.lstrip("n").split(".")[0]) < 7:
        return ""
    lo, hi = SLACK["aac"]
    if manifest == "manifest.mpd" and all(r["codec"] == "aac" and lo <= off[r["name"]] + 1024 * (r["segments"] - 1) <= hi
                                          for r in failing):
        return DASH_AAC_FRAME_DROP
    if manifest == "single/master.m3u8" and all(r["segments"] > 1 and off[r["name"]] < 0 for r in failing):
        return HLS_BYTERANGE_STOP
    return ""


@pytest.mark.parametrize("layout", ["", "single/"])
@pytest.mark.parametrize("asset", [*LENGTHS, "imageio-encoded"])
def test_hls_manifests_parse_and_declare_measured_rates(assets, asset: str, layout: str) -> None:
    server, published = assets
    master, result = published[asset]
    duration = master_info(master).duration_s
    url = server.url(result.asset_id, f"{layout}master.m3u8")
    variants = m3u8.loads(get(url).decode(), uri=url)
    assert variants.is_variant and len(variants.playlists) == len(result.info["renditions"])
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in get(url).decode()
    for variant in variants.playlists:
        info = variant.stream_info
        assert info.codecs in {"mp4a.40.2", "opus", "fLaC"}, info.codecs
        playlist, measured = measure_hls_media(urljoin(url, variant.uri))
        assert int(playlist.version) >= 7
        assert all(s.init_section is not None for s in playlist.segments)
        assert max(round(s.duration) for s in playlist.segments) <= playlist.target_duration  # RFC 8216 4.3.3.1
        heard = sum(measured.seconds)  # the EXTINF sum: the master's duration, to the sample (no priming)
        assert abs(heard - duration) <= 1 / 48000, (variant.uri, heard, duration)
        # Recomputed exactly from the served bytes: the declared figures are these, rounded up to bit/s.
        peak, average = measured.hls_peak(playlist.target_duration), measured.average()
        assert info.bandwidth == math.ceil(peak), (variant.uri, info.bandwidth, float(peak))
        assert info.average_bandwidth == math.ceil(average), (variant.uri, info.average_bandwidth, float(average))
        frame = FRAME[info.codecs] / 48000  # every segment but the last is 6.4 s, to one codec frame
        # (the first one less its priming, at most one frame: in ticks, where that is exact)
        assert all(abs(t - 307200) <= FRAME[info.codecs] for t in measured.ticks[:-1]), measured.ticks
        assert 0 < measured.seconds[-1] < 6.4 + frame
        if info.codecs != "fLaC":  # 6.4 s is a whole number of AAC and Opus frames (15360-sample grid)
            assert all(t == 307200 for t in measured.ticks[1:-1]), measured.ticks


@pytest.mark.parametrize("layout", ["", "single/"])
@pytest.mark.parametrize("asset", [*LENGTHS, "imageio-encoded"])
def test_dash_manifests_parse_and_declare_measured_rates(assets, asset: str, layout: str) -> None:
    server, published = assets
    master, result = published[asset]
    mpd, reps = measure_dash(server.url(result.asset_id, f"{layout}manifest.mpd"))
    assert mpd.type == "static"
    min_buffer = xs_seconds(mpd.min_buffer_time)
    assert sorted(r.id for r in reps) == sorted(r["name"] for r in result.info["renditions"])
    for aset in mpd.periods[0].adaptation_sets:  # never mix channel layouts in one set (DASH-IF IOP)
        assert len({c.value for c in aset.audio_channel_configurations}) == 1
    for rep in reps:
        assert rep.codecs in {"mp4a.40.2", "opus", "fLaC"}
        measured = rep.measured.dash_bandwidth(min_buffer)  # exact, from the served bytes
        assert rep.bandwidth == math.ceil(measured), (rep.id, rep.bandwidth, float(measured))
        assert 0 <= sum(rep.measured.seconds) - master_info(master).duration_s <= 0.05

