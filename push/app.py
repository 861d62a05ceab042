"""The push service: an internal HTTP API for messages that come from outside the chat.

So far it only answers ``/healthz``; the system-message, group and broadcast
endpoints arrive with the groups/push issue (see docs/architecture.md).
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="MM-IM push service", version="0.1.0")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
