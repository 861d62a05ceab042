"""Groups over HTTP: create, list mine, list members, add and remove members, leave.

Who may do what (checked on every call, against MySQL):
- any user creates a group and becomes its owner and first admin;
- members list the members; others get 403 NOT_A_MEMBER;
- admins add and remove members; other members get 403 FORBIDDEN;
- only the owner removes another admin; nobody removes the owner, and the owner
  cannot leave (a group always has someone who can manage it);
- any member removes themself (leaves).
Every membership change invalidates the group's cached member set (``GroupStore``),
which the connectors and the logic read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from dispatcher.dependencies import TOKEN_ERRORS, Authenticated, services_of
from schemas.conversations import ID_PATTERN
from schemas.errors import ErrorCode, ForbiddenError, ImError
from schemas.http import error_responses
from store.groups import Group, GroupStore

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 128
MAX_ADDED_PER_REQUEST = 1000
# Existence checks of the users to add run this many at a time (MySQL pool friendly).
USER_CHECK_CONCURRENCY = 8

UserId = Annotated[str, Field(pattern=ID_PATTERN, description="a registered user id")]
GroupIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="the group's id")]
UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a user id")]

router = APIRouter(prefix="/v1/groups", tags=["groups"])


class NewGroup(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class GroupInfo(BaseModel):
    group_id: str = Field(description="server-chosen; the group's conversation is g:<group_id>")
    name: str
    owner: str


class MyGroup(GroupInfo):
    role: str = Field(description="admin or member")


class MyGroups(BaseModel):
    groups: list[MyGroup]


class MemberInfo(BaseModel):
    user_id: str
    role: str = Field(description="admin or member")


class Members(BaseModel):
    group_id: str
    members: list[MemberInfo]


class NewMembers(BaseModel):
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_ADDED_PER_REQUEST)


class Added(BaseModel):
    added: int = Field(description="users who were not members before")


def _info(group: Group) -> GroupInfo:
    return GroupInfo(group_id=group.group_id, name=group.name, owner=group.owner)


async def _require_member(groups: GroupStore, group_id: str, user: str) -> tuple[Group, str]:
    """The group and the caller's role in it; 404 if no such group, 403 if not a member."""
    group = await groups.require(group_id)
    role = await groups.role_of(group_id, user)
    if role is None:
        raise ForbiddenError(
            f"you are not a member of group {group_id!r}", code=ErrorCode.NOT_A_MEMBER
        )
    return group, role


async def _require_admin(groups: GroupStore, group_id: str, user: str) -> Group:
    group, role = await _require_member(groups, group_id, user)
    if role != "admin":
        raise ForbiddenError(f"only admins of group {group_id!r} manage its members")
    return group


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GroupInfo,
    responses=error_responses(ErrorCode.BAD_REQUEST, *TOKEN_ERRORS),
    summary="Create a group (the caller becomes its owner and admin)",
)
async def create_group(body: NewGroup, claims: Authenticated, request: Request) -> GroupInfo:
    group = await services_of(request).groups.create(body.name, claims.user)
    log.info("group %s created by %s", group.group_id, claims.user)
    return _info(group)


@router.get(
    "",
    response_model=MyGroups,
    responses=error_responses(*TOKEN_ERRORS),
    summary="The groups the caller belongs to",
)
async def my_groups(claims: Authenticated, request: Request) -> MyGroups:
    memberships = await services_of(request).groups.memberships(claims.user)
    return MyGroups(
        groups=[
            MyGroup(group_id=g.group_id, name=g.name, owner=g.owner, role=role)
            for g, role in memberships
        ]
    )


@router.get(
    "/{group_id}/members",
    response_model=Members,
    responses=error_responses(
        ErrorCode.BAD_REQUEST, *TOKEN_ERRORS, ErrorCode.NOT_A_MEMBER, ErrorCode.NOT_FOUND
    ),
    summary="The members of a group (members only)",
)
async def list_members(group_id: GroupIdPath, claims: Authenticated, request: Request) -> Members:
    groups = services_of(request).groups
    await _require_member(groups, group_id, claims.user)
    members = await groups.members(group_id)
    return Members(
        group_id=group_id,
        members=[MemberInfo(user_id=m.user_id, role=m.role) for m in members],
    )


@router.post(
    "/{group_id}/members",
    response_model=Added,
    responses=error_responses(
        ErrorCode.BAD_REQUEST,
        *TOKEN_ERRORS,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_A_MEMBER,
        ErrorCode.NOT_FOUND,
    ),
    summary="Add users to a group (admins only; every user must exist)",
)
async def add_members(
    group_id: GroupIdPath, body: NewMembers, claims: Authenticated, request: Request
) -> Added:
    services = services_of(request)
    await _require_admin(services.groups, group_id, claims.user)
    user_ids = list(dict.fromkeys(body.user_ids))
    gate = asyncio.Semaphore(USER_CHECK_CONCURRENCY)

    async def exists(user_id: str) -> bool:
        async with gate:
            return await services.users.exists(user_id)

    found = await asyncio.gather(*(exists(user_id) for user_id in user_ids))
    unknown = [user_id for user_id, ok in zip(user_ids, found, strict=True) if not ok]
    if unknown:
        # Nothing is added: the caller fixes the list and sends it again.
        raise ImError(ErrorCode.NOT_FOUND, f"no such users: {', '.join(unknown[:20])}")
    added = await services.groups.add_members(group_id, user_ids)
    log.info("%s added %d members to group %s", claims.user, added, group_id)
    return Added(added=added)


async def _remove(groups: GroupStore, group_id: str, caller: str, target: str) -> None:
    """Remove ``target`` from the group on behalf of ``caller`` (see the module's rules)."""
    group, caller_role = await _require_member(groups, group_id, caller)
    if target == group.owner:
        message = (
            "the owner cannot leave the group"
            if caller == target
            else "nobody can remove the group's owner"
        )
        raise ForbiddenError(message)
    if target != caller:
        if caller_role != "admin":
            raise ForbiddenError(f"only admins of group {group_id!r} remove other members")
        target_role = await groups.role_of(group_id, target)
        if target_role is None:
            raise ImError(ErrorCode.NOT_FOUND, f"{target} is not a member of group {group_id!r}")
        if target_role == "admin" and caller != group.owner:
            raise ForbiddenError("only the owner removes an admin")
    await groups.remove_member(group_id, target)
    log.info("%s removed %s from group %s", caller, target, group_id)


@router.delete(
    "/{group_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        ErrorCode.BAD_REQUEST,
        *TOKEN_ERRORS,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_A_MEMBER,
        ErrorCode.NOT_FOUND,
    ),
    summary="Remove a member (admins), or oneself (leave)",
)
async def remove_member(
    group_id: GroupIdPath, user_id: UserIdPath, claims: Authenticated, request: Request
) -> Response:
    await _remove(services_of(request).groups, group_id, claims.user, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{group_id}/leave",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        ErrorCode.BAD_REQUEST,
        *TOKEN_ERRORS,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_A_MEMBER,
        ErrorCode.NOT_FOUND,
    ),
    summary="Leave a group (the owner cannot)",
)
async def leave(group_id: GroupIdPath, claims: Authenticated, request: Request) -> Response:
    await _remove(services_of(request).groups, group_id, claims.user, claims.user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
