"""deploy/nginx-edge.conf in front of a real ``tonearm serve`` with protected assets: licences and keys
pass through to the origin every time (never cached, POST bodies intact, no slice Range), the token
is still the origin's to check, and protected media are cached like clear media."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from fixtures_protection import SIGNING_KEY, Protected
from fixtures_servers import start_origin

from benchmarks.servers import Edge
from origin.signing import sign

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def edge(protected: Protected, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("protection-edge")
    log = root / "origin-access.log"
    env = {"TONEARM_SIGNING_KEY": SIGNING_KEY, "TONEARM_ORIGIN_ACCESS_LOG": str(log)}
    with start_origin(protected.data, env=env) as origin:
        with Edge(int(origin.base_url.rsplit(":", 1)[1]), root / "edge") as e:
            e.start(root / "logs", ready_path="/healthz")
            yield e, log


def call(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def at_origin(log, needle: str) -> list[dict]:
    time.sleep(1.0)  # the origin flushes its access log every 0.5 s
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [r for r in recs if needle in r["path"]]


def test_licences_and_keys_are_never_cached(edge, protected: Protected) -> None:
    e, log = edge
    key = protected.key("cbcs")
    tok = sign(SIGNING_KEY, key.asset_id, int(time.time()) + 300)
    body = json.dumps({"kids": [base64.urlsafe_b64encode(key.kid).rstrip(b"=").decode()]}).encode()
    licence = f"{e.base}/s/{tok}/keys/{key.asset_id}/clearkey"
    answers = [call(licence, body) for _ in range(3)]
    assert all(status == 200 for status, _, _ in answers), answers
    assert all(json.loads(b)["keys"][0]["k"] == base64.urlsafe_b64encode(key.key).rstrip(b"=").decode()
               for _, _, b in answers)
    assert all(h.get("Cache-Control") == "no-store, private" and not h.get("X-Cache") for _, h, _ in answers)
    assert len([r for r in at_origin(log, "/clearkey") if r["method"] == "POST"]) == 3  # each reached the origin
    hls = protected.key("aes-128")
    hls_tok = sign(SIGNING_KEY, hls.asset_id, int(time.time()) + 300)
    for _ in range(2):
        status, headers, data = call(f"{e.base}/s/{hls_tok}/keys/{hls.asset_id}/hls.key")
        assert status == 200 and data == hls.key and headers["Cache-Control"] == "no-store, private"
    assert len(at_origin(log, "/hls.key")) == 2
    # the edge never answers a key for a token the origin refuses, even right after a good one
    assert call(f"{e.base}/keys/{hls.asset_id}/hls.key")[0] == 403
    forged = hls_tok[:-1] + ("A" if not hls_tok.endswith("A") else "B")
    assert call(f"{e.base}/s/{forged}/keys/{hls.asset_id}/hls.key")[0] == 403


def test_protected_media_are_cached_at_the_edge(edge, protected: Protected) -> None:
    e, log = edge
    aid = protected.assets["cbcs"]["id"]
    tok = sign(SIGNING_KEY, aid, int(time.time()) + 300)
    url = f"{e.base}/s/{tok}/assets/{aid}/aac_64k/seg-00001.m4s"
    first, second = call(url), call(url)
    assert first[0] == second[0] == 200 and first[2] == second[2]
    assert first[2] == (protected.published("cbcs") / "aac_64k" / "seg-00001.m4s").read_bytes()
    assert second[1].get("X-Cache") == "HIT"
    assert len([r for r in at_origin(log, "aac_64k/seg-00001.m4s") if r["method"] == "GET"]) == 1
