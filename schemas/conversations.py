"""Conversation ids: the Kafka key that keeps one conversation in order."""

from __future__ import annotations

import uuid

# Fixed namespace so a (conversation, seq) pair always maps to the same msg_id.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b0c3d52-8f1e-4f0a-9d3c-6a1e2f7b9c10")


def direct(user_a: str, user_b: str) -> str:
    """The 1:1 conversation between two users (order of arguments irrelevant)."""
    low, high = sorted((user_a, user_b))
    return f"p:{low}:{high}"


def group(group_id: str) -> str:
    return f"g:{group_id}"


def system(user_id: str) -> str:
    """System messages (notices, friend requests) addressed to one user."""
    return f"s:{user_id}"


# The sender of system messages (push service, friend notices); no user may take this id.
SYSTEM_SENDER = "system"

# Broadcasts to everyone online share one conversation with its own sequence.
BROADCAST = "broadcast"


def members_of_direct(conv_id: str) -> tuple[str, str] | None:
    """The two users of a 1:1 conversation id, or None if it is not one."""
    kind, _, rest = conv_id.partition(":")
    if kind != "p":
        return None
    low, sep, high = rest.partition(":")
    return (low, high) if sep and low and high else None


def message_id(conv_id: str, seq: int) -> str:
    """Deterministic server message id: re-processing yields the same id."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{conv_id}#{seq}"))


# User and group ids are restricted so that conversation ids stay unambiguous.
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
