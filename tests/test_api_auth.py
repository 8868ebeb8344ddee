"""Management API: keys, scopes (401/403 on every route), the OpenAPI document, bounded requests,
JSON errors, and the public origin never answering the API's paths.  SQLite and PostgreSQL catalogs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_api import api_config, bearer, open_client

from tonearm.app.apikeys import KeyStore, parse_key
from tonearm.core.config import ConfigError

AID = "b" * 64
UID = "0" * 32
# Every route, the scope it needs (None: public) and a request that reaches its handler.  Written out
# here, not read from the app: test_every_route_is_in_this_table keeps the two in step.
ROUTES = {
    ("GET", "/healthz"): None,
    ("GET", "/v1/openapi.json"): None,
    ("OPTIONS", "/v1/tus"): None,
    ("GET", "/metrics"): "read",
    ("POST", "/v1/uploads"): "ingest",
    ("POST", "/v1/tus"): "ingest",
    ("HEAD", "/v1/tus/{upload_id}"): "ingest",
    ("PATCH", "/v1/tus/{upload_id}"): "ingest",
    ("DELETE", "/v1/tus/{upload_id}"): "ingest",
    ("POST", "/v1/jobs"): "ingest",
    ("GET", "/v1/jobs"): "read",
    ("GET", "/v1/jobs/{job_id}"): "read",
    ("DELETE", "/v1/jobs/{job_id}"): "ingest",
    ("GET", "/v1/assets/{asset_id}"): "read",
    ("DELETE", "/v1/assets/{asset_id}"): "admin",
    ("POST", "/v1/assets/{asset_id}/repackage"): "admin",
}
WRONG_KEY = {"read": "ingest", "ingest": "read", "admin": "ingest_read"}  # a key that lacks the scope


def concrete(path: str) -> str:
    return path.replace("{upload_id}", UID).replace("{job_id}", "nojob").replace("{asset_id}", AID)


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request, tmp_path: Path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    return api_config(tmp_path / "data", url)


@pytest.fixture
async def client(cfg, aiohttp_client):
    client = await open_client(cfg, aiohttp_client)
    yield client
    client.close_api()


async def test_every_route_is_in_this_table(client) -> None:
    registered = {(r.method, r.resource.canonical) for r in client.app.router.routes()}
    assert registered == set(ROUTES)


@pytest.mark.parametrize("method, path", [k for k, v in ROUTES.items() if v is not None],
                         ids=[f"{m} {p}" for (m, p), v in ROUTES.items() if v is not None])
async def test_each_protected_route_401_then_403_then_passes(client, method: str, path: str) -> None:
    scope = ROUTES[(method, path)]
    url = concrete(path)
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, bearer("tnk_00000000_" + "A" * 43),
                    bearer(client.keys["revoked"]), bearer("not a key")):
        resp = await client.request(method, url, headers=headers)
        assert resp.status == 401, (headers, await resp.text())
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        if method != "HEAD":
            assert (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.request(method, url, headers=bearer(client.keys[WRONG_KEY[scope]]))
    assert resp.status == 403
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    if method != "HEAD":
        assert (await resp.json())["error"] == {"code": "forbidden", "message": f"this key lacks the {scope!r} scope"}
    for name in (scope, "admin"):  # the right scope, and admin (which implies the others), reach the handler
        resp = await client.request(method, url, headers={**bearer(client.keys[name]), "Tus-Resumable": "1.0.0"})
        assert resp.status not in (401, 403), (name, resp.status, await resp.text())


async def test_public_routes_need_no_key(client) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.options("/v1/tus")
    assert resp.status == 204 and resp.headers["Tus-Version"] == "1.0.0"
    assert "creation" in resp.headers["Tus-Extension"] and "termination" in resp.headers["Tus-Extension"]


async def test_openapi_document_is_valid_and_names_exactly_the_routes(client) -> None:
    from openapi_spec_validator import validate

    doc = await (await client.get("/v1/openapi.json")).json()
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    registered = {(r.method, r.resource.canonical) for r in client.app.router.routes()}
    assert documented == registered
    for (method, path), scope in ROUTES.items():  # the document states each route's scope as the app enforces it
        op = doc["paths"][path][method.lower()]
        assert op["security"] == ([{"bearer": [scope]}] if scope else [])


def test_openapi_validator_rejects_a_broken_document() -> None:
    """Negative control: the validator used above does fail on a document with a broken response."""
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    from tonearm.app.api.openapi import document

    doc = document(api_config(Path("/nonexistent")))
    doc["paths"]["/v1/jobs"]["get"]["responses"] = {"200": {"content": {}}}  # no description
    with pytest.raises(OpenAPIValidationError):
        validate(doc)


async def test_errors_are_json_with_stable_codes_and_no_paths(client, cfg) -> None:
    k = bearer(client.keys["admin"])
    cases = [
        (client.get("/nowhere"), 404, "not_found"),
        (client.put("/v1/jobs", headers=k), 405, "method_not_allowed"),
        (client.get("/v1/jobs?state=bogus", headers=k), 400, "invalid_state"),
        (client.get("/v1/jobs?limit=100000", headers=k), 400, "invalid_limit"),
        (client.get("/v1/jobs/" + "x" * 65, headers=k), 400, "invalid_job_id"),
        (client.get("/v1/jobs/nojob", headers=k), 404, "job_not_found"),
        (client.get("/v1/assets/NOTHEX", headers=k), 400, "invalid_asset_id"),
        (client.get(f"/v1/assets/{AID}", headers=k), 404, "asset_not_found"),
        (client.post(f"/v1/assets/{AID}/repackage", headers=k), 404, "asset_not_found"),
        (client.post("/v1/jobs", headers=k, data="{}"), 415, "unsupported_media_type"),
        (client.post("/v1/jobs", headers=k, json=[1]), 400, "invalid_json"),
        (client.post("/v1/jobs", headers={**k, "Content-Type": "application/json"}, data="{nope"), 400,
         "invalid_json"),
        (client.post("/v1/jobs", headers=k, json={"source": "a.wav", "evil": 1}), 400, "invalid_request"),
        (client.post("/v1/jobs", headers=k, json={"source": "a.wav"}), 400, "no_bucket"),  # local storage
        (client.post("/v1/jobs", headers=k, json={"source": "x" * 70000}), 413, "body_too_large"),
        (client.post("/v1/uploads?filename=../../etc/passwd", headers=k, data=b"x"), 400, "invalid_filename"),
        (client.post("/v1/uploads?priority=1000", headers=k, data=b"x"), 400, "invalid_priority"),
        (client.post("/v1/uploads", headers=k, data=b""), 400, "empty_file"),
    ]
    for request, status, code in cases:
        resp = await request
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code), body
        assert resp.headers["Content-Type"].startswith("application/json")
        assert str(cfg.storage.root) not in json.dumps(body) and "Traceback" not in json.dumps(body)


async def test_request_heads_are_bounded(client, cfg) -> None:
    resp = await client.get("/healthz", headers={"X-Big": "a" * (cfg.api.max_header + 1)})
    assert resp.status in (400, 431)
    resp = await client.get("/healthz", headers={f"X-H{i}": "1" for i in range(100)})
    assert resp.status in (400, 431)
    assert (await client.get("/healthz", headers={"X-Fine": "a" * 1000})).status == 200


async def test_metrics_count_requests_by_route_and_status(client) -> None:
    await client.get("/v1/jobs")  # 401
    await client.get("/v1/jobs", headers=bearer(client.keys["read"]))  # 200
    text = await (await client.get("/metrics", headers=bearer(client.keys["read"]))).text()
    assert 'tonearm_api_requests_total{method="GET",route="/v1/jobs",status="401"} 1.0' in text
    assert 'tonearm_api_requests_total{method="GET",route="/v1/jobs",status="200"} 1.0' in text
    assert "# TYPE tonearm_jobs gauge" in text and "tonearm_workers_live" in text  # queue depth, live workers


def test_keys_are_stored_hashed_and_compared_whole(cfg) -> None:
    store = KeyStore(cfg)
    try:
        key, text = store.create(["read"], "ci")
        assert parse_key(text) is not None and text.startswith(f"tnk_{key.id}_")
        rows = store._run("SELECT id, name, digest, scopes FROM api_keys WHERE id = %s", (key.id,))
        secret = text[len(f"tnk_{key.id}_"):]  # base64url: may itself hold "_"
        assert len(secret) >= 43 and text not in repr(rows) and secret not in repr(rows)  # only the digest is kept
        assert store.verify(text) == key
        assert store.verify(text[:-1] + ("A" if text[-1] != "A" else "B")) is None  # one character off
        assert store.verify(f"tnk_{key.id}_" + "A" * 43) is None  # the right id, another secret
        store.revoke(key.id)
        assert store.verify(text) is None
        assert [k.revoked_at is not None for k in store.list() if k.id == key.id] == [True]
    finally:
        store.close()


def test_keys_cli_prints_the_key_once_and_lists_only_ids(tmp_path: Path, capsys, monkeypatch) -> None:
    """``tonearm keys create|list|revoke`` through the CLI's own entry point (main), in this process."""
    from tonearm.app.cli import main

    for var in [v for v in os.environ if v.startswith("TONEARM_")]:
        monkeypatch.delenv(var)
    data = tmp_path / "data"
    run = ["--data", str(data), "keys"]
    assert main(run + ["create", "--scope", "ingest", "--scope", "read", "--name", "label feed"]) == 0
    created = capsys.readouterr().out
    text = created.split()[-1]
    key_id = parse_key(text)[0]
    assert created.count(text) == 1
    assert main(run + ["list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "ingest,read" in listed and "label feed" in listed and text not in listed
    assert main(run + ["revoke", key_id]) == 0
    assert f"revoked key {key_id}" in capsys.readouterr().out
    assert main(run + ["revoke", "00000000"]) == 1  # an unknown id: one line, not a traceback
    assert capsys.readouterr().err == "tonearm: no API key with id '00000000'\n"
    store = KeyStore(api_config(data))
    assert store.verify(text) is None
    with pytest.raises(ConfigError, match="--scope"):
        store.create(["root"])

async def test_the_public_origin_never_answers_the_api(cfg, aiohttp_client) -> None:
    """``tonearm serve`` has no route for the management API: 404 for every /v1 path, never a 2xx."""
    from origin.app import make_app as make_origin

    origin = await aiohttp_client(make_origin(cfg))
    for path in ("/v1/openapi.json", "/v1/jobs", f"/v1/assets/{AID}", "/v1/tus", "/v1/uploads"):
        resp = await origin.get(path, headers=bearer("tnk_00000000_" + "A" * 43))
        assert resp.status == 404, (path, resp.status)
    for method, path in (("POST", "/v1/uploads"), ("DELETE", f"/v1/assets/{AID}"), ("PATCH", f"/v1/tus/{UID}")):
        resp = await origin.request(method, path, data=b"x")
        assert resp.status in (404, 405), (method, path, resp.status)


def test_job_records_never_show_server_paths(cfg) -> None:
    from tonearm.app.api.base import job_json
    from tonearm.app.jobs import Job, JobState

    job = Job(id="j1", state=JobState.FAILED, source=f"{cfg.storage.root}/uploads/ready/x.flac", filename="x.flac",
              origin="api", priority=0, asset_id=None, attempts=1, error_code="storage_error",
              error_message=f"cannot write {cfg.storage.root}/masters/ab/x.flac: No space", progress={},
              created_at=0.0, updated_at=0.0)
    shown = json.dumps(job_json(job))
    assert str(cfg.storage.root) not in shown and "<path>" in shown and '"source": "api"' in shown
