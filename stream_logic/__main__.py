"""``python -m stream_logic`` / ``mmim-logic``: the same as ``faust -A stream_logic.app worker``.

Without arguments it runs a worker at ``IM_LOG_LEVEL``; with arguments they go
to Faust's command line (``python -m stream_logic tables``, ...). The Faust
worker handles SIGTERM itself: it stops the agents, flushes and commits what is
done, and leaves the consumer group so the partitions move on at once.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run a Faust worker of the logic app."""
    from config.settings import load_settings

    settings = load_settings()  # a bad IM_* value stops us here with a clear message
    from stream_logic.app import app

    if len(sys.argv) <= 1:
        sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
