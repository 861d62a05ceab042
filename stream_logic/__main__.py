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
    import mode.loop

    # uvloop before the app (and its loop) exists: under load the worker's time
    # goes to socket writes and loop scheduling, which uvloop does in C.
    mode.loop.use("uvloop")
    # Faust reads Kafka in a second thread and hands records over through the
    # loop: with the default 5 ms GIL switch interval every hand-over can wait
    # that long for the busy main thread, a floor on each hop's latency.
    sys.setswitchinterval(0.001)
    from stream_logic.app import app

    if len(sys.argv) <= 1:
        sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
