"""The connector's small HTTP side: /healthz for the stack, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector import metrics

HEALTH_CHECK_TIMEOUT_S = 1.0


def make_app(
    connector_id: str, healthy: Callable[[], Awaitable[bool]], connections: Callable[[], int]
) -> web.Application:
    """``healthy`` says whether Kafka and Redis are usable right now."""

    async def healthz(_: web.Request) -> web.Response:
        try:
            ok = await asyncio.wait_for(healthy(), HEALTH_CHECK_TIMEOUT_S)
        except Exception:
            ok = False
        body = {
            "status": "ok" if ok else "unavailable",
            "connector_id": connector_id,
            "connections": connections(),
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; clean up with ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
