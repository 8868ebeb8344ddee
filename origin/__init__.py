"""The HLS/DASH origin: serves published assets from local disk or S3-compatible storage.

URL scheme
----------
``GET /assets/<id>/<file>``
    A published file: ``master.m3u8``, ``manifest.mpd``, ``asset.json``,
    ``<rung>/index.m3u8``, ``<rung>/init.mp4``, ``<rung>/seg-00001.m4s``,
    ``single/master.m3u8``, ``single/manifest.mpd``, ``single/<rung>.m3u8``,
    ``single/<rung>.mp4``.  ``<id>`` is 64 hex characters.  An asset exists
    only once its ``asset.json`` does; anything else (staging, quarantine,
    half-published) is 404.  Range, conditional requests, gzip for manifests
    and CORS as described in ``origin.representation`` and ``origin.ranges``.
``GET /s/<expiry>.<signature>/assets/<id>/<file>``
    The same file through an expiring signed token (``origin.signing``);
    relative URIs in the manifests inherit the token.  Expired or forged: 403.
    With ``[origin] require_signed = true`` the unsigned form answers 403.
``GET /api/assets?limit=50&offset=0``
    Catalog page: ``{"items": [...], "total", "limit", "offset", "state"}``.
    ``[origin] catalog`` says who may read it (``origin.api``): ``"public"``
    (published assets only, unsigned playback paths, never a token),
    ``"key"`` (``Authorization: Bearer <catalog_key>``; any ``?state=``,
    playback paths signed) or ``"off"`` (404).
``GET /api/assets/<id>``
    One asset: tags, loudness, renditions and playback paths for HLS and DASH
    in both layouts (404 for an unpublished asset in the public catalog).
``GET /healthz``   the process is up.
``GET /readyz``    storage is reachable (503 otherwise).
``GET /metrics``   Prometheus exposition, summed over all workers.
``GET /`` and ``GET /static/<file>``
    The demo player page and its vendored scripts from ``origin/static/``
    (a placeholder page when ``index.html`` is missing).
``OPTIONS`` any path: CORS preflight (Range and conditional headers allowed;
    ``[origin] cors_origins`` for media, ``api_cors_origins`` for ``/api/``;
    ``Access-Control-Allow-Private-Network`` only with ``allow_private_network``).

Every response carries ``X-Request-Id`` (echoed when the client sent a sane
one) and is written to the JSON-lines access log.
"""
