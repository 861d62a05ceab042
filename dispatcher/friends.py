"""Friendships over HTTP: request, accept, reject, list, remove.

Everyone acts only for themself: the caller is always the token's user, the peer
is a path or body field. A request and an acceptance reach the other user as a
system message (``SystemPublisher.to_users``), so a user who is offline finds
them at the next login. The notice's push id is derived from the request it is
about: repeating a request (say after a 503) re-sends the same notice, which the
logic recognises as a retry instead of showing it twice.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from dispatcher.dependencies import TOKEN_ERRORS, Authenticated, Services, services_of
from push.publisher import stable_push_id
from schemas.conversations import ID_PATTERN
from schemas.errors import ErrorCode, ImError
from schemas.http import error_responses
from store.friends import ACCEPTED, Outcome

log = logging.getLogger(__name__)

PeerPath = Annotated[str, Path(pattern=ID_PATTERN, description="the other user's id")]

router = APIRouter(prefix="/v1/friends", tags=["friends"])


class FriendRequest(BaseModel):
    user_id: str = Field(pattern=ID_PATTERN, description="the user to befriend")


class Friendship(BaseModel):
    user_id: str = Field(description="the other user")
    status: Literal["pending", "accepted"] = Field(
        description="pending: waiting for their answer; accepted: you are friends"
    )


class Friends(BaseModel):
    friends: list[str]
    incoming: list[str] = Field(description="requests waiting for your answer")
    outgoing: list[str] = Field(description="your requests not answered yet")


async def _notify(
    services: Services, kind: str, sender: str, recipient: str, outcome: Outcome
) -> None:
    """A system message to ``recipient``: data {"type": kind, "from": sender}."""
    text = (
        f"{sender} wants to be your friend"
        if kind == "friend_request"
        else f"{sender} accepted your friend request"
    )
    push_id = stable_push_id(kind, sender, recipient, outcome.since)
    await services.system.to_users(push_id, [recipient], text, {"type": kind, "from": sender})


@router.post(
    "/requests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Friendship,
    responses=error_responses(
        ErrorCode.BAD_REQUEST, *TOKEN_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE
    ),
    summary="Ask a user for friendship (accepts theirs if they already asked you)",
)
async def request_friendship(
    body: FriendRequest, claims: Authenticated, request: Request
) -> Friendship:
    services = services_of(request)
    peer = body.user_id
    if peer == claims.user:
        raise ImError(ErrorCode.BAD_REQUEST, "you cannot befriend yourself")
    if not await services.users.exists(peer):
        raise ImError(ErrorCode.NOT_FOUND, f"no such user: {peer}")
    outcome = await services.friends.request(claims.user, peer)
    kind = "friend_accepted" if outcome.status == ACCEPTED else "friend_request"
    await _notify(services, kind, claims.user, peer, outcome)
    log.info("%s → %s: %s (%s)", claims.user, peer, kind, "new" if outcome.changed else "again")
    return Friendship(user_id=peer, status=outcome.status)


@router.post(
    "/requests/{peer}/accept",
    response_model=Friendship,
    responses=error_responses(
        ErrorCode.BAD_REQUEST, *TOKEN_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE
    ),
    summary="Accept the friend request of a user",
)
async def accept(peer: PeerPath, claims: Authenticated, request: Request) -> Friendship:
    services = services_of(request)
    outcome = await services.friends.accept(claims.user, peer)
    await _notify(services, "friend_accepted", claims.user, peer, outcome)
    return Friendship(user_id=peer, status=outcome.status)


@router.post(
    "/requests/{peer}/reject",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(ErrorCode.BAD_REQUEST, *TOKEN_ERRORS, ErrorCode.NOT_FOUND),
    summary="Reject the friend request of a user (they are not told)",
)
async def reject(peer: PeerPath, claims: Authenticated, request: Request) -> Response:
    await services_of(request).friends.reject(claims.user, peer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "",
    response_model=Friends,
    responses=error_responses(*TOKEN_ERRORS),
    summary="Your friends and the requests still open",
)
async def list_friends(claims: Authenticated, request: Request) -> Friends:
    listed = await services_of(request).friends.list(claims.user)
    return Friends(friends=listed.friends, incoming=listed.incoming, outgoing=listed.outgoing)


@router.delete(
    "/{peer}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(ErrorCode.BAD_REQUEST, *TOKEN_ERRORS, ErrorCode.NOT_FOUND),
    summary="End a friendship (for both users)",
)
async def remove_friend(peer: PeerPath, claims: Authenticated, request: Request) -> Response:
    await services_of(request).friends.remove(claims.user, peer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
