"""The OpenAPI 3.1 document of the management API, served at ``/v1/openapi.json``.

Written out by hand, route by route (tests check it with ``openapi-spec-validator`` and that it names
exactly the routes the app registers, methods included).
"""

from __future__ import annotations

from typing import Any

from tonearm.core.config import Config

__all__ = ("document",)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "bad input", 401: "no, unknown or revoked key", 403: "the key lacks the scope",
            404: "not found", 408: "the body stalled (no byte for 60 s)", 409: "conflict (see the code)", 412: "wrong Tus-Resumable",
            413: "larger than [ingest] max_bytes", 415: "wrong Content-Type", 423: "upload busy",
            502: "the object store failed"}
    return {str(s): {"$ref": "#/components/responses/Error"} if s not in text else
            {**_json(_ref("Error"), text[s])} for s in statuses}


def _path_param(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _op(summary: str, scope: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    op["security"] = [{"bearer": [scope]}] if scope else []
    if scope:
        op["description"] = (extra.get("description", "") + f" Needs the `{scope}` scope (or `admin`).").strip()
    return op


JOB = {"type": "object", "required": ["id", "state", "origin", "priority", "attempts", "created_at"],
       "properties": {"id": {"type": "string"}, "state": {"enum": ["queued", "validating", "transcoding", "packaging",
                      "publishing", "published", "quarantined", "failed", "cancelled"]},
                      "source": {"type": "string", "description": "s3://bucket/key, or the intake for uploads"},
                      "filename": {"type": "string"}, "origin": {"type": "string"}, "priority": {"type": "integer"},
                      "asset_id": {"type": ["string", "null"]}, "attempts": {"type": "integer"},
                      "error_code": {"type": ["string", "null"]}, "error_message": {"type": ["string", "null"]},
                      "progress": {"type": "object", "additionalProperties": {"type": "number"}},
                      "created_at": {"type": "number"}, "updated_at": {"type": "number"}}}
JOB_ONE = {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}}
ASSET_ID = _path_param("asset_id", "^[0-9a-f]{64}$", "the master's SHA-256")
JOB_ID = _path_param("job_id", "^[A-Za-z0-9_-]{1,64}$", "a job id")
UPLOAD_ID = _path_param("upload_id", "^[0-9a-f]{32}$", "a tus upload id (from Location)")
TUS_HEADER = {"name": "Tus-Resumable", "in": "header", "required": True, "schema": {"const": "1.0.0"}}
PRIORITY = {"type": "integer", "minimum": -100, "maximum": 100, "default": 0}


def _paths() -> dict[str, Any]:
    jobs_list = {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}}
    return {
        "/healthz": {"get": _op("Liveness", None, {"200": _json({"type": "object"}, "alive")})},
        "/metrics": {"get": _op("Prometheus metrics: requests, upload bytes, queue depth by state", "read",
                                {"200": {"description": "text exposition format",
                                         "content": {"text/plain": {"schema": {"type": "string"}}}},
                                 **_errors(401, 403)})},
        "/v1/openapi.json": {"get": _op("This document", None, {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
        "/v1/uploads": {"post": _op(
            "Upload a master (the body is its bytes) and queue it", "ingest",
            {"202": _json(JOB_ONE, "queued (or already published: the job says so)"),
             **_errors(400, 401, 403, 408, 409, 413, 415)},
            parameters=[_query("filename", {"type": "string", "maxLength": 255}, "the master's file name"),
                        _query("priority", PRIORITY, "higher runs first"),
                        _query("force", {"type": "boolean"}, "re-ingest bytes that were taken down")],
            requestBody={"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            description="Streamed to disk and hashed on the way; 409 `asset_taken_down` without force.")},
        "/v1/tus": {
            "options": _op("tus discovery: version, extensions, maximum size", None, {"204": {
                "description": "Tus-Version, Tus-Extension, Tus-Max-Size"}}),
            "post": _op("tus creation: a new resumable upload", "ingest",
                        {"201": {"description": "Location of the upload, Upload-Expires"},
                         **_errors(400, 401, 403, 412, 413)},
                        parameters=[TUS_HEADER, {"name": "Upload-Length", "in": "header", "required": True,
                                                 "schema": {"type": "integer", "minimum": 1}},
                                    {"name": "Upload-Metadata", "in": "header", "required": False,
                                     "schema": {"type": "string"},
                                     "description": "filename, priority, force (base64 values)"}])},
        "/v1/tus/{upload_id}": {
            "parameters": [UPLOAD_ID, TUS_HEADER],
            "head": _op("tus: the offset to resume from", "ingest",
                        {"200": {"description": "Upload-Offset, Upload-Length; Tonearm-Job-Id once complete"},
                         **_errors(401, 403, 404, 412)}),
            "patch": _op("tus: append bytes at Upload-Offset", "ingest",
                         {"204": {"description": "new Upload-Offset; Tonearm-Job-Id when the last byte arrived"},
                          **_errors(401, 403, 404, 408, 409, 412, 413, 415, 423)},
                         parameters=[{"name": "Upload-Offset", "in": "header", "required": True,
                                      "schema": {"type": "integer", "minimum": 0}}],
                         requestBody={"required": True, "content": {"application/offset+octet-stream": {
                             "schema": {"type": "string", "format": "binary"}}}}),
            "delete": _op("tus termination: delete the partial upload", "ingest",
                          {"204": {"description": "deleted"}, **_errors(401, 403, 404, 412)})},
        "/v1/jobs": {
            "post": _op("Queue a master already in the configured bucket", "ingest",
                        {"202": _json(JOB_ONE, "queued"), **_errors(400, 401, 403, 404, 409, 413, 415, 502)},
                        requestBody={"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["source"], "additionalProperties": False,
                            "properties": {"source": {"type": "string", "description": "key or s3://bucket/key"},
                                           "filename": {"type": "string"}, "priority": PRIORITY,
                                           "force": {"type": "boolean"}}}}}}),
            "get": _op("List jobs, newest first", "read", {"200": _json(jobs_list, "jobs"), **_errors(400, 401, 403)},
                       parameters=[_query("state", {"type": "string"}, "only jobs in this state"),
                                   _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most")])},
        "/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": _op("One job: state, attempts, error, progress", "read",
                       {"200": _json(JOB_ONE, "the job"), **_errors(400, 401, 403, 404)}),
            "delete": _op("Cancel a job (a running one's ffmpeg is stopped within seconds)", "ingest",
                          {"200": _json(JOB_ONE, "the job, cancelled or already ended"),
                           **_errors(400, 401, 403, 404)})},
        "/v1/assets/{asset_id}": {
            "parameters": [ASSET_ID],
            "get": _op("One asset: state and published descriptor", "read",
                       {"200": _json({"type": "object", "properties": {"asset": _ref("Asset")}}, "the asset"),
                        **_errors(400, 401, 403, 404)}),
            "delete": _op("Take down: the descriptor first (the origin stops serving), then the media", "admin",
                          {"200": _json({"type": "object", "properties": {
                              "asset": {"type": "object"},
                              "cancelled_jobs": {"type": "array", "items": {"type": "string"}}}},
                                        "taken down (a tombstone refuses the same bytes without force)"),
                           **_errors(400, 401, 403)})},
        "/v1/assets/{asset_id}/repackage": {
            "parameters": [ASSET_ID],
            "post": _op("Rebuild with the current ladder; the new version replaces the old in one step", "admin",
                        {"202": _json(JOB_ONE, "queued"), **_errors(400, 401, 403, 404, 409)})},
    }


def document(cfg: Config) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "tonearm management API", "version": "1",
                 "description": "Uploads, jobs, takedown and repackage. Errors are "
                                "{\"error\": {\"code\", \"message\"}} with stable codes."},
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key from `tonearm keys create`"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Job": JOB,
                "Asset": {"type": "object", "required": ["id", "state"], "properties": {
                    "id": {"type": "string"}, "state": {"enum": ["published", "taken_down"]},
                    "descriptor": {"type": ["object", "null"]}}},
            },
            "responses": {"Error": _json(_ref("Error"), "an error")},
        },
        "x-limits": {"max_bytes": cfg.ingest.max_bytes, "max_body": cfg.api.max_body},
    }
