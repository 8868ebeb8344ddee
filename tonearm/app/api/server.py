"""``tonearm api``: the management API app assembled, and the process that serves it.

Its own port (``[api] host``/``port``, default 127.0.0.1:8081), never the origin's; request lines
and header fields are bounded (``[api] max_header``), JSON bodies by ``[api] max_body``, uploads by
``[ingest] max_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from tonearm.app.api import routes, tus, uploads
from tonearm.app.api.base import MIDDLEWARES, STATE, ApiState
from tonearm.app.apikeys import KeyStore
from tonearm.app.jobs import open_queue
from tonearm.core.backends import open_storage
from tonearm.core.config import Config

__all__ = ("make_app", "serve_api", "runner_args")

log = logging.getLogger("tonearm.api")


def make_app(cfg: Config, *, queue: Any, keys: KeyStore, storage: Any, sweep_every: float = 60.0
             ) -> web.Application:
    """The API app for one process; the caller owns (and closes) queue, keys and storage."""
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=cfg.api.max_body)
    state = ApiState(cfg, queue, keys, storage)
    state.uploads = uploads.Receiver(state)
    app[STATE] = state
    routes.add_routes(app)
    uploads.add_routes(app)
    tus.add_routes(app)

    async def janitor(app: web.Application) -> Any:
        task = asyncio.create_task(_sweep_forever(state, sweep_every))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(janitor)
    return app


async def _sweep_forever(state: ApiState, every: float) -> None:
    """Expire abandoned tus uploads and drop received masters whose jobs have ended."""
    while True:
        try:
            await state.run(state.uploads.sweep)
        except Exception:
            log.exception("api: upload sweep failed")
        await asyncio.sleep(every)


def runner_args(cfg: Config) -> dict[str, Any]:
    """aiohttp's limits on the request head: line and each field at most ``max_header`` bytes, 64 fields."""
    return {"max_line_size": cfg.api.max_header, "max_field_size": cfg.api.max_header, "max_headers": 64,
            "keepalive_timeout": 75.0}


async def _serve(cfg: Config) -> None:
    queue = open_queue(cfg)
    keys = KeyStore(cfg)
    storage = open_storage(cfg)
    runner = web.AppRunner(make_app(cfg, queue=queue, keys=keys, storage=storage), access_log=None,
                           shutdown_timeout=10.0, **runner_args(cfg))
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.api.host, cfg.api.port, backlog=512)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else cfg.api.port
        print(f"tonearm api: serving on http://{cfg.api.host}:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(queue.close)
        keys.close()


def serve_api(cfg: Config) -> int:
    logging.getLogger("tonearm.api").setLevel(logging.INFO)
    asyncio.run(_serve(cfg))
    return 0
