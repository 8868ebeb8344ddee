"""Hostile paths: nothing outside the published tree (or inside an unpublished asset) is ever served.

Requests are written byte for byte on a raw socket, so no client library
normalises them first.  Secret files are planted next to, above and inside
the data directory, and symlinks inside a published asset point at them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest
from fixtures_origin import SECRET, asset_id_for, make_ffmpeg_asset, plant_secrets
from fixtures_servers import start_origin

from origin.signing import sign

KEY = "test-signing-key-0123456789abcdef0123"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("paths") / "data"
    published = data / "published"
    asset = make_ffmpeg_asset(published, "paths")
    plant_secrets(data)
    adir = published / asset
    (adir / "aac_128k" / "seg-09999.m4s").symlink_to(data / "secret.m4s")  # file symlink out of the tree
    (adir / "secret.txt").write_bytes(SECRET)  # not a served type
    (adir / ".hidden.m4s").write_bytes(SECRET)  # dot files are never served
    # An "asset" directory that is a symlink to a folder outside the published root, descriptor included.
    outside = data.parent / "outside"
    (outside / "aac_128k").mkdir(parents=True)
    (outside / "asset.json").write_text("{}")
    (outside / "aac_128k" / "seg-00001.m4s").write_bytes(SECRET)
    linked = asset_id_for("linked-out")
    (published / linked).symlink_to(outside, target_is_directory=True)
    # Unpublished: half-written (no descriptor), still in staging, quarantined.
    half = asset_id_for("half-written")
    shutil.copytree(adir, published / half, symlinks=True)
    (published / half / "asset.json").unlink()
    (published / half / "aac_128k" / "seg-00001.m4s").write_bytes(SECRET)
    staged = asset_id_for("staged")
    shutil.copytree(adir, data / "staging" / f"{staged}.x1", symlinks=True)
    (data / "quarantine" / staged).mkdir(parents=True)
    (data / "quarantine" / staged / "master.bin").write_bytes(SECRET)
    server = start_origin(data, env={"TONEARM_SIGNING_KEY": KEY})
    yield {"data": data, "asset": asset, "linked": linked, "half": half, "staged": staged, "server": server}
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]
    # Hostile paths (quotes, backslashes, NULs, non-UTF-8) still make valid JSON lines in the access log.
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert len(records) >= 60
    assert all({"ts", "id", "method", "path", "status", "bytes", "ms", "route", "remote"} <= r.keys() for r in records)


def raw_get(base: str, target: bytes) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def corpus(asset: str, token: str) -> list[bytes]:
    a = f"/assets/{asset}".encode()
    s = f"/s/{token}/assets/{asset}".encode()
    out = [
        a + b"/../secret.m4s", a + b"/../../secret.m4s", a + b"/../../../secret.m4s",
        a + b"/aac_128k/../../secret.m4s", a + b"/aac_128k/../../../secret.m4s",
        a + b"/%2e%2e/secret.m4s", a + b"/%2E%2E/%2E%2E/secret.m4s", a + b"/..%2fsecret.m4s",
        a + b"/..%2f..%2fsecret.m4s", a + b"/%2e%2e%2f%2e%2e%2fsecret.m4s", a + b"/aac_128k%2f..%2f..%2fsecret.m4s",
        a + b"/%252e%252e/secret.m4s", a + b"/%252e%252e%252fsecret.m4s", a + b"/%25252e%25252e/secret.m4s",
        a + b"/..\\secret.m4s", a + b"/..%5csecret.m4s", a + b"/aac_128k\\..\\..\\secret.m4s",
        a + b"/..%255csecret.m4s", a + b"/master.m3u8%00.m4s", a + b"/%00/../secret.m4s",
        a + b"/%c0%ae%c0%ae/secret.m4s", a + b"/%e0%80%ae%e0%80%ae/secret.m4s", a + b"/.%2e/secret.m4s",
        a + b"//etc/passwd", a + b"/%2fetc%2fpasswd", a + b"/../../../../../../etc/passwd",
        a + b"/aac_128k/seg-09999.m4s", a + b"/secret.txt", a + b"/.hidden.m4s", a + b"/aac_128k/",
        a + b"/" + b"a" * 5000 + b".m4s", a + b"/aac_128k/" + b"x/" * 300 + b"seg-00001.m4s",
        a + b"/aac_128k/./../../secret.m4s", a + b"/./../secret.m4s",
        b"/assets/../secret.m4s", b"/assets/%2e%2e/secret.m4s", b"/assets/%2e%2e/%2e%2e/secret.m4s",
        b"/assets/../../etc/passwd", b"/assets/" + asset.encode().upper() + b"/master.m3u8",
        b"/static/../../../data/secret.m4s", b"/static/..%2f..%2f..%2fsecret.m4s", b"/static/%2e%2e/app.py",
        b"/static/../app.py", b"/../secret.m4s", b"/%2e%2e/secret.m4s", b"/..%2fsecret.m4s",
        b"/api/assets/../../secret.m4s", b"/api/%2e%2e/%2e%2e/secret.m4s",
        s + b"/../secret.m4s", s + b"/%2e%2e/%2e%2e/secret.m4s", s + b"/aac_128k/seg-09999.m4s",
        f"/s/{token}/../../secret.m4s".encode(), f"/s/{token}/assets/%2e%2e/secret.m4s".encode(),
    ]
    return out


def test_hostile_paths_never_leak(site):
    base = site["server"].base_url
    token = sign(KEY, site["asset"], 4_000_000_000)
    passwd = open("/etc/passwd", "rb").read(20) if os.path.exists("/etc/passwd") else b"root:x:0:0"
    statuses = {}
    for target in corpus(site["asset"], token):
        status, data = raw_get(base, target)
        statuses[target] = status
        assert SECRET not in data, target
        assert passwd not in data, target
        assert b"import " not in data, target  # no source file of the origin itself
        assert status in (400, 403, 404), (target, status)
    assert len(statuses) >= 50


@pytest.mark.parametrize("which", ["linked", "half", "staged"])
def test_unpublished_or_escaping_assets_are_404(site, which):
    base = site["server"].base_url
    asset = site[which]
    for rel in ("asset.json", "master.m3u8", "aac_128k/index.m3u8", "aac_128k/init.mp4", "aac_128k/seg-00001.m4s"):
        status, data = raw_get(base, f"/assets/{asset}/{rel}".encode())
        assert status == 404, (which, rel)
        assert SECRET not in data
    assert raw_get(base, f"/api/assets/{asset}".encode())[0] == 404


def test_published_files_are_served(site):
    """The control: the same server does serve the real files."""
    base = site["server"].base_url
    adir = site["data"] / "published" / site["asset"]
    for rel in ("asset.json", "master.m3u8", "manifest.mpd", "aac_128k/index.m3u8", "aac_128k/init.mp4",
                "aac_128k/seg-00001.m4s", "single/aac_128k.mp4", "single/master.m3u8"):
        status, data = raw_get(base, f"/assets/{site['asset']}/{rel}".encode())
        assert status == 200, rel
        assert data.endswith((adir / rel).read_bytes())


def test_deleted_asset_stops_being_served(site, tmp_path):
    base = site["server"].base_url
    published = site["data"] / "published"
    asset = make_ffmpeg_asset(published, "deleted-later")
    target = f"/assets/{asset}/aac_128k/seg-00001.m4s".encode()
    assert raw_get(base, target)[0] == 200  # now cached
    (published / asset / "asset.json").unlink()  # unpublish: the descriptor is the publish marker
    deadline = time.monotonic() + 10
    while raw_get(base, target)[0] != 404:  # cached entries are revalidated within a second
        assert time.monotonic() < deadline, "unpublished asset still served after 10 s"
        time.sleep(0.2)
