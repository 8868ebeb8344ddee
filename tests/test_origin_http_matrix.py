"""Range and conditional-request matrix: tonearm against a real nginx on the same files.

Each case is sent to nginx and to tonearm (bytes from the in-memory cache, and
with the cache off so bodies are streamed from disk); status, Content-Range,
Content-Length and body must agree, and every 206 body is also checked
against the file's bytes on disk.  Multipart bodies are parsed and compared
part by part.  The rows where nginx and RFC 9110 differ are asserted
separately: tonearm gives the RFC answer, and the test proves nginx's.
"""

from __future__ import annotations

import http.client
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures_origin import make_ffmpeg_asset
from fixtures_servers import start_nginx, start_origin

pytestmark = pytest.mark.nginx

DAY = 86400


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("matrix") / "data"
    asset = make_ffmpeg_asset(data / "published", "matrix")
    nginx = start_nginx(data / "published")
    cached = start_origin(data)
    streamed = start_origin(data, env={"TONEARM_ORIGIN_CACHE_MB": "0"})
    try:
        yield {"data": data, "asset": asset, "nginx": nginx, "cached": cached, "streamed": streamed}
    finally:
        for s in (cached, streamed):
            s.stop()
        nginx.stop()
        for s in (cached, streamed):
            assert "Traceback" not in s.log() and "ERROR" not in s.log(), s.log()[-3000:]


def request(base: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, headers={"Accept-Encoding": "identity", **headers})
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def parse_multipart(ctype: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body (RFC 9110 14.6)."""
    assert ctype.startswith("multipart/byteranges"), ctype
    boundary = ctype.split("boundary=", 1)[1].strip().strip('"').encode()
    delim = b"--" + boundary
    assert body.rstrip().endswith(delim + b"--"), body[-80:]
    parts = []
    pos = body.index(delim)
    while True:
        line_end = body.index(b"\r\n", pos)
        if body[pos:line_end] == delim + b"--":
            break
        head_end = body.index(b"\r\n\r\n", line_end)
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, v in (h.split(":", 1) for h in body[line_end + 2:head_end].decode().split("\r\n"))
        )
        crange = fields["content-range"]
        first, last = (int(x) for x in crange.split()[1].split("/")[0].split("-"))
        data = body[head_end + 4:head_end + 4 + last - first + 1]
        parts.append((crange, data))
        pos = body.index(delim, head_end + 4 + len(data))
    return parts


def check_bytes(file: bytes, status: int, headers: dict[str, str], body: bytes, method: str) -> None:
    """A 206 body is exactly the bytes its Content-Range names; a 200 is the whole file."""
    if method == "HEAD":
        assert body == b""
        return
    if status == 200:
        assert body == file
    elif status == 206 and "content-range" in headers:
        first, last = (int(x) for x in headers["content-range"].split()[1].split("/")[0].split("-"))
        assert body == file[first:last + 1]
    elif status == 206:
        for crange, data in parse_multipart(headers["content-type"], body):
            first, last = (int(x) for x in crange.split()[1].split("/")[0].split("-"))
            assert crange.endswith(f"/{len(file)}")
            assert data == file[first:last + 1]


# (id, method, headers template).  {L} = length, {E} = the server's ETag, {LM} = Last-Modified,
# {OLD}/{NEW} = a day before/after it.
CASES = [
    ("plain", "GET", {}),
    ("first-100", "GET", {"Range": "bytes=0-99"}),
    ("open-ended", "GET", {"Range": "bytes=100-"}),
    ("suffix", "GET", {"Range": "bytes=-100"}),
    ("one-byte", "GET", {"Range": "bytes=0-0"}),
    ("last-byte", "GET", {"Range": "bytes={L1}-"}),
    ("exact-whole", "GET", {"Range": "bytes=0-{L1}"}),
    ("past-end-clipped", "GET", {"Range": "bytes=0-{L1000}"}),
    ("suffix-longer-than-file", "GET", {"Range": "bytes=-{L1000}"}),
    ("start-at-length", "GET", {"Range": "bytes={L}-"}),
    ("start-past-length", "GET", {"Range": "bytes={L}-{L1000}"}),
    ("suffix-zero", "GET", {"Range": "bytes=-0"}),
    ("two-ranges", "GET", {"Range": "bytes=0-99,200-299"}),
    ("two-ranges-spaces", "GET", {"Range": "bytes=0-10, 20-30"}),
    ("three-ranges", "GET", {"Range": "bytes=1-2,3-4,5-6"}),
    ("overlapping", "GET", {"Range": "bytes=0-99,50-149"}),
    ("descending", "GET", {"Range": "bytes=500-599,0-99"}),
    ("one-unsatisfiable-part", "GET", {"Range": "bytes=0-99,{L}-{L1000}"}),
    ("range-and-suffix", "GET", {"Range": "bytes=0-99,-100"}),
    ("ranges-exceed-length", "GET", {"Range": "bytes=0-,0-"}),
    ("unknown-unit", "GET", {"Range": "items=0-10"}),
    ("empty-bytes", "GET", {"Range": "bytes="}),
    ("unit-case", "GET", {"Range": "BYTES=0-9"}),
    ("head", "HEAD", {}),
    ("head-range", "HEAD", {"Range": "bytes=0-99"}),
    ("head-multirange", "HEAD", {"Range": "bytes=0-9,20-29"}),
    ("inm-match", "GET", {"If-None-Match": "{E}"}),
    ("inm-other", "GET", {"If-None-Match": '"nope"'}),
    ("inm-star", "GET", {"If-None-Match": "*"}),
    ("inm-weak", "GET", {"If-None-Match": "W/{E}"}),
    ("inm-list", "GET", {"If-None-Match": '"nope", {E}'}),
    ("inm-head", "HEAD", {"If-None-Match": "{E}"}),
    ("inm-range", "GET", {"If-None-Match": "{E}", "Range": "bytes=0-99"}),
    ("inm-other-ims-same", "GET", {"If-None-Match": '"nope"', "If-Modified-Since": "{LM}"}),
    ("ims-same", "GET", {"If-Modified-Since": "{LM}"}),
    ("ims-old", "GET", {"If-Modified-Since": "{OLD}"}),
    ("ims-future", "GET", {"If-Modified-Since": "{NEW}"}),
    ("ims-garbage", "GET", {"If-Modified-Since": "yesterday-ish"}),
    ("ims-range", "GET", {"If-Modified-Since": "{OLD}", "Range": "bytes=0-99"}),
    ("if-match", "GET", {"If-Match": "{E}"}),
    ("if-match-other", "GET", {"If-Match": '"nope"'}),
    ("if-match-star", "GET", {"If-Match": "*"}),
    ("if-match-range", "GET", {"If-Match": "{E}", "Range": "bytes=0-99"}),
    ("if-match-other-range", "GET", {"If-Match": '"nope"', "Range": "bytes=0-99"}),
    ("ius-same", "GET", {"If-Unmodified-Since": "{LM}"}),
    ("ius-old", "GET", {"If-Unmodified-Since": "{OLD}"}),
    ("if-range-etag", "GET", {"If-Range": "{E}", "Range": "bytes=0-99"}),
    ("if-range-other-etag", "GET", {"If-Range": '"nope"', "Range": "bytes=0-99"}),
    ("if-range-weak-etag", "GET", {"If-Range": "W/{E}", "Range": "bytes=0-99"}),
    ("if-range-date", "GET", {"If-Range": "{LM}", "Range": "bytes=0-99"}),
    ("if-range-old-date", "GET", {"If-Range": "{OLD}", "Range": "bytes=0-99"}),
    ("if-range-multi", "GET", {"If-Range": "{E}", "Range": "bytes=0-9,20-29"}),
]

# Rows where nginx 1.22 and RFC 9110 differ: (id, headers, tonearm status (RFC), nginx status).
DIFFERENCES = [
    ("invalid-spec-abc", {"Range": "bytes=abc"}, 200, 416),  # RFC 9110 14.2: may ignore an invalid range
    ("invalid-last-before-first", {"Range": "bytes=5-2"}, 200, 416),  # 14.1.1: last-pos < first-pos is invalid
    ("invalid-dash-only", {"Range": "bytes=-"}, 200, 416),
    ("huge-last-pos", {"Range": "bytes=0-99999999999999999999"}, 206, 416),  # 14.1.2: clip to the length
    ("inm-match-ims-old", {"If-None-Match": "{E}", "If-Modified-Since": "{OLD}"}, 304, 200),  # 13.2.2: INM wins
]

FILES = ["aac_128k/seg-00002.m4s", "single/aac_128k.mp4"]


def fill(template: dict[str, str], *, length: int, etag: str, mtime: float) -> dict[str, str]:
    values = {"L": str(length), "L1": str(length - 1), "L1000": str(length + 1000), "E": etag,
              "LM": formatdate(mtime, usegmt=True), "OLD": formatdate(mtime - DAY, usegmt=True),
              "NEW": formatdate(mtime + DAY, usegmt=True)}
    out = {}
    for k, v in template.items():
        for name, val in sorted(values.items(), key=lambda kv: -len(kv[0])):
            v = v.replace("{" + name + "}", val)
        out[k] = v
    return out


def _run(servers: dict, mode: str, rel: str, method: str, template: dict[str, str]):
    path = f"/assets/{servers['asset']}/{rel}"
    file = (Path(servers["data"]) / "published" / servers["asset"] / rel).read_bytes()
    mtime = (Path(servers["data"]) / "published" / servers["asset"] / rel).stat().st_mtime
    results = {}
    for name in ("nginx", mode):
        base = servers[name].base_url
        etag = request(base, "HEAD", path, {})[1]["etag"]
        results[name] = request(base, method, path, fill(template, length=len(file), etag=etag, mtime=mtime))
    return file, results["nginx"], results[mode]


@pytest.mark.parametrize("mode", ["cached", "streamed"])
@pytest.mark.parametrize("rel", FILES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_answer_as_nginx(servers, mode, rel, case):
    _, method, template = case
    file, (n_status, n_headers, n_body), (t_status, t_headers, t_body) = _run(servers, mode, rel, method, template)
    assert t_status == n_status, (t_status, n_status, t_headers)
    assert t_headers.get("content-range") == n_headers.get("content-range")
    if t_status in (200, 206):
        assert t_headers["content-length"] == n_headers["content-length"]
        assert t_headers["accept-ranges"] == "bytes"
        check_bytes(file, t_status, t_headers, t_body, method)
        check_bytes(file, n_status, n_headers, n_body, method)
        if "content-range" not in t_headers and t_status == 206 and method == "GET":
            assert parse_multipart(t_headers["content-type"], t_body) == \
                parse_multipart(n_headers["content-type"], n_body)
        elif method == "GET":
            assert t_body == n_body
    if t_status == 304:
        assert t_body == b"" and "etag" in t_headers and "cache-control" in t_headers
    if t_status == 416:
        assert t_headers["content-range"] == f"bytes */{len(file)}"


@pytest.mark.parametrize("mode", ["cached", "streamed"])
@pytest.mark.parametrize("case", DIFFERENCES, ids=[c[0] for c in DIFFERENCES])
def test_where_nginx_and_rfc_differ(servers, mode, case):
    _, template, ours, nginx_status = case
    file, (n_status, _, _), (t_status, t_headers, t_body) = _run(servers, mode, FILES[0], "GET", template)
    assert n_status == nginx_status  # the documented nginx behaviour (if this changes, update origin.ranges)
    assert t_status == ours
    check_bytes(file, t_status, t_headers, t_body, "GET")
    if t_status == 206:
        assert t_headers["content-range"] == f"bytes 0-{len(file) - 1}/{len(file)}"


def test_head_has_the_get_headers(servers):
    path = f"/assets/{servers['asset']}/{FILES[0]}"
    base = servers["cached"].base_url
    for rng in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=0-9,20-29"}):
        _, get_h, get_b = request(base, "GET", path, rng)
        _, head_h, head_b = request(base, "HEAD", path, rng)
        assert head_b == b""
        for name in ("content-length", "content-range", "etag", "last-modified", "cache-control", "accept-ranges"):
            assert head_h.get(name) == get_h.get(name), name
        assert head_h["content-type"].split(";")[0] == get_h["content-type"].split(";")[0]
        assert int(get_h["content-length"]) == len(get_b)


def test_last_modified_matches_nginx(servers):
    path = f"/assets/{servers['asset']}/{FILES[1]}"
    _, n, _ = request(servers["nginx"].base_url, "HEAD", path, {})
    _, t, _ = request(servers["cached"].base_url, "HEAD", path, {})
    assert t["last-modified"] == n["last-modified"]
