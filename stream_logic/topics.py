"""The logic's input topics exist, with the right partition count, before Faust subscribes.

The logic reads three topics, all keyed by conversation id and partitioned
alike: the msg topic (from connectors and the push service), the persist topic
and the group fan-out topic (both written by the sequencer for the logic's own
later stages).

Created here rather than left to Faust or to auto-creation: a topic created in
the same moment the consumer subscribes may be missing from its metadata and
then ignored until the next refresh (minutes), and an auto-created msg topic
gets the broker's default partition count, which would not match the table.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config.settings import Settings
from schemas.topics import fanout_topic, msg_topic, persist_topic

log = logging.getLogger(__name__)


VISIBLE_TIMEOUT_S = 30.0


class PartitionMismatch(RuntimeError):
    """A logic topic exists with a partition count other than IM_MSG_PARTITIONS."""


async def ensure_topics(settings: Settings) -> None:
    """Create the logic's topics if missing; fail if their partition count differs."""
    names = [msg_topic(settings), persist_topic(settings), fanout_topic(settings)]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id=f"{settings.logic_app_id}-admin"
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=settings.msg_partitions,
                    replication_factor=settings.topic_replication,
                )
                for name in names
            ]
        )
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"cannot create topic {topic}: Kafka error {code}")
        deadline = asyncio.get_running_loop().time() + VISIBLE_TIMEOUT_S
        while True:
            found = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics(names)
                if t["error_code"] == 0
            }
            if len(found) == len(names):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topics {names} not visible after {VISIBLE_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    for name, partitions in found.items():
        if partitions != settings.msg_partitions:
            raise PartitionMismatch(
                f"topic {name} has {partitions} partitions but IM_MSG_PARTITIONS is"
                f" {settings.msg_partitions}: conversations would lose their order"
            )
    log.info("topics %s ready with %d partitions", names, settings.msg_partitions)
