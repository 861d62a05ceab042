"""The connector's Prometheus metrics, in a registry of its own (served on /metrics)."""

from __future__ import annotations

from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)

connections = Gauge(
    "mmim_connector_connections", "Open client connections (logged in or not)", registry=registry
)
sessions = Gauge("mmim_connector_sessions", "Logged-in client sessions", registry=registry)
frames_in = Counter(
    "mmim_connector_frames_in_total",
    "Frames received from clients, by op",
    ["op"],
    registry=registry,
)
frames_out = Counter(
    "mmim_connector_frames_out_total",
    "Frames written to clients, by op",
    ["op"],
    registry=registry,
)
errors = Counter(
    "mmim_connector_errors_total",
    "ERROR frames sent to clients, by code",
    ["code"],
    registry=registry,
)
produce_latency = Histogram(
    "mmim_connector_kafka_produce_seconds",
    "Time from handing a client message to the producer until Kafka acknowledged it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=registry,
)
push_records = Counter(
    "mmim_connector_push_records_total",
    "Records consumed from the push topic, by kind",
    ["kind"],
    registry=registry,
)


# labels() validates and locks on every call: a few microseconds per frame on
# the hottest paths. The children are looked up once per label value instead
# (the values are op names, record kinds: a small fixed set).
@cache
def frames_in_of(op: str) -> Counter:
    """The frames_in counter of one op."""
    return frames_in.labels(op)


@cache
def frames_out_of(op: str) -> Counter:
    """The frames_out counter of one op."""
    return frames_out.labels(op)


@cache
def push_records_of(kind: str) -> Counter:
    """The push_records counter of one record kind."""
    return push_records.labels(kind)
