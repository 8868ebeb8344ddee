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
``GET /api/assets?limit=50&offset=0&state=published``
    Catalog page: ``{"items": [...], "total", "limit", "offset", "state"}``;
    ``state`` is any asset state or ``all``.
``GET /api/assets/<id>``
    One asset: state, tags, loudness, renditions and playback paths for HLS
    and DASH in both layouts (signed when a key is configured).
``GET /healthz``   the process is up.
``GET /readyz``    storage is reachable (503 otherwise).
``GET /metrics``   Prometheus exposition, summed over all workers.
``GET /`` and ``GET /static/<file>``
    The demo player page and its vendored scripts from ``origin/static/``
    (a placeholder page when ``index.html`` is missing).
``OPTIONS`` any path: CORS preflight (Range and conditional headers allowed,
    ``Access-Control-Allow-Private-Network`` when asked).

Every response carries ``X-Request-Id`` (echoed when the client sent a sane
one) and is written to the JSON-lines access log.
"""
