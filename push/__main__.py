"""Run the push service: ``python -m push`` or ``mmim-push``."""

from __future__ import annotations

import logging

import uvicorn

from config.settings import load_settings
from push.app import create_app


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings), host=settings.push_host, port=settings.push_port, log_level="warning"
    )


if __name__ == "__main__":
    main()
