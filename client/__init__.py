"""MM-IM client: the asyncio SDK (:mod:`client.sdk`) and the ``mmim`` CLI (:mod:`client.cli`)."""

from client.backoff import Backoff
from client.dispatcher_api import FriendList, Friendship, Group, Member
from client.errors import (
    AuthFailed,
    ClientClosed,
    ClientError,
    ConnectionLost,
    DispatcherError,
    DispatcherUnreachable,
    LoginRateLimited,
    NoConnectorAvailable,
    RequestRefused,
    ServerError,
    ServiceUnavailable,
    UserExists,
)
from client.messages import Ack, Message, Session, SyncPage
from client.sdk import Client

__all__ = [
    "Ack",
    "AuthFailed",
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "DispatcherError",
    "DispatcherUnreachable",
    "FriendList",
    "Friendship",
    "Group",
    "LoginRateLimited",
    "Member",
    "Message",
    "NoConnectorAvailable",
    "RequestRefused",
    "ServerError",
    "ServiceUnavailable",
    "Session",
    "SyncPage",
    "UserExists",
]
