"""``python -m dispatcher`` / ``mmim-dispatcher``: serve the dispatcher's HTTP API.

uvicorn handles SIGTERM and SIGINT: it stops accepting, finishes the requests in
flight, runs the app's shutdown (closing Redis and MySQL) and exits.
"""

from __future__ import annotations

import logging

import uvicorn

from config.settings import load_settings
from dispatcher.app import create_app


def main() -> None:
    """Run the dispatcher on ``IM_DISPATCHER_HOST:IM_DISPATCHER_PORT``."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.dispatcher_host,
        port=settings.dispatcher_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
