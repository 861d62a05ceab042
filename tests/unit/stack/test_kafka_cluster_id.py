"""Cluster ids for formatting the local Kafka's storage."""

from __future__ import annotations

import base64
import uuid
from unittest import mock

from stack.infra import kafka_cluster_id


def test_cluster_ids_are_kafka_uuids_and_never_look_like_an_option() -> None:
    # The first of these encodes to a string starting with "-" (0xf8 -> "-"+...).
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    assert base64.urlsafe_b64encode(dash_first.bytes).decode().startswith("-")
    plain = uuid.UUID(bytes=b"\x01" + bytes(15))
    with mock.patch("stack.infra.uuid.uuid4", side_effect=[dash_first, plain]):
        cluster_id = kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
