"""``python -m connector`` / ``mmim-connector``: run one connector until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop

from config.garbage_collection import freeze_startup_heap
from config.settings import Settings, load_settings
from connector.service import ConnectorService

log = logging.getLogger("connector")


async def run(settings: Settings) -> None:
    """Start the connector, wait for SIGTERM/SIGINT, then drain within IM_DRAIN_TIMEOUT_S."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    service = ConnectorService(settings)
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    freeze_startup_heap()  # config/garbage_collection.py
    await stop.wait()
    await service.drain()


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        format=(
            f"%(asctime)s %(levelname)s connector[{settings.connector_id}] %(name)s: %(message)s"
        ),
    )
    try:
        uvloop.run(run(settings))
    except Exception:
        log.exception("connector %s failed", settings.connector_id)
        sys.exit(1)


if __name__ == "__main__":
    main()
