"""The logic's Kafka consumer waits at the broker as IM_LOGIC_FETCH_* say, not as Faust does."""

from __future__ import annotations

from stream_logic.app import app, settings


async def test_the_worker_consumer_uses_the_configured_fetch_wait_not_faust_s() -> None:
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == settings.logic_fetch_max_wait_ms
        assert consumer._fetch_max_wait_ms != 1500  # Faust's hard-coded wait
        assert consumer._fetch_min_bytes == settings.logic_fetch_min_bytes
        assert consumer._fetch_min_bytes > 1  # aiokafka's default: a fetch per record or two
    finally:
        await consumer._client.close()
