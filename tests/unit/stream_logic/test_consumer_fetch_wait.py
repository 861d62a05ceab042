"""The logic's Kafka consumer waits at the broker for what IM_LOGIC_FETCH_MAX_WAIT_MS says."""

from __future__ import annotations

from stream_logic.app import app, settings


async def test_the_worker_consumer_uses_the_configured_fetch_wait_not_faust_s() -> None:
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == settings.logic_fetch_max_wait_ms
        assert consumer._fetch_max_wait_ms != 1500  # Faust's hard-coded wait
    finally:
        await consumer._client.close()
