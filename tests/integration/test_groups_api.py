"""The dispatcher's groups API as a real process on the real stack.

Who may do what: any user creates a group; members list members; admins add and
remove; anyone leaves except the owner. Every refusal is a clear JSON 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

PASSWORD = "a good password"


@dataclass
class Caller:
    """A registered user and the headers that prove it."""

    user_id: str
    headers: dict[str, str]


@pytest.fixture
async def http(launch, port: Callable[[], int]) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    http_port = port()
    url = f"http://127.0.0.1:{http_port}"
    launch(
        "dispatcher",
        name="dispatcher",
        env={"IM_DISPATCHER_PORT": str(http_port)},
        health_url=f"{url}/healthz",
    )
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def register(http: httpx.AsyncClient, user_id: str) -> Caller:
    created = await http.post("/v1/users", json={"user_id": user_id, "password": PASSWORD})
    assert created.status_code == 201, created.text
    token = await http.post("/v1/tokens", json={"user_id": user_id, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return Caller(user_id, {"Authorization": f"Bearer {token.json()['token']}"})


async def members_of(http: httpx.AsyncClient, group_id: str, caller: Caller) -> dict[str, str]:
    response = await http.get(f"/v1/groups/{group_id}/members", headers=caller.headers)
    assert response.status_code == 200, response.text
    assert response.json()["group_id"] == group_id
    return {m["user_id"]: m["role"] for m in response.json()["members"]}


def refused(response: httpx.Response, status: int, code: int) -> bool:
    """A JSON error with this status and MM-IM code, and a message saying why."""
    body = response.json()
    return response.status_code == status and body["code"] == code and bool(body["message"])


async def test_create_list_add_and_remove_members(
    http: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    owner, ann, ben = [await register(http, unique(name)) for name in ("owner", "ann", "ben")]

    created = await http.post("/v1/groups", json={"name": "Hiking club"}, headers=owner.headers)
    assert created.status_code == 201
    group = created.json()
    assert group["name"] == "Hiking club" and group["owner"] == owner.user_id
    group_id = group["group_id"]
    assert await members_of(http, group_id, owner) == {owner.user_id: "admin"}

    added = await http.post(
        f"/v1/groups/{group_id}/members",
        json={"user_ids": [ann.user_id, ben.user_id, ann.user_id]},
        headers=owner.headers,
    )
    assert added.status_code == 200 and added.json() == {"added": 2}
    again = await http.post(
        f"/v1/groups/{group_id}/members", json={"user_ids": [ann.user_id]}, headers=owner.headers
    )
    assert again.json() == {"added": 0}
    expected = {owner.user_id: "admin", ann.user_id: "member", ben.user_id: "member"}
    assert await members_of(http, group_id, ann) == expected

    mine = await http.get("/v1/groups", headers=ann.headers)
    assert mine.status_code == 200
    assert {
        "group_id": group_id,
        "name": "Hiking club",
        "owner": owner.user_id,
        "role": "member",
    } in (mine.json()["groups"])

    # The admin removes ben; ann leaves on her own.
    removed = await http.delete(
        f"/v1/groups/{group_id}/members/{ben.user_id}", headers=owner.headers
    )
    assert removed.status_code == 204
    left = await http.post(f"/v1/groups/{group_id}/leave", headers=ann.headers)
    assert left.status_code == 204
    assert await members_of(http, group_id, owner) == {owner.user_id: "admin"}
    assert group_id not in [
        g["group_id"] for g in (await http.get("/v1/groups", headers=ann.headers)).json()["groups"]
    ]


async def test_only_members_see_and_only_admins_manage(
    http: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    owner, member, outsider = [
        await register(http, unique(name)) for name in ("boss", "crew", "stranger")
    ]
    group_id = (await http.post("/v1/groups", json={"name": "Crew"}, headers=owner.headers)).json()[
        "group_id"
    ]
    await http.post(
        f"/v1/groups/{group_id}/members", json={"user_ids": [member.user_id]}, headers=owner.headers
    )
    members_url = f"/v1/groups/{group_id}/members"

    # Outsiders see nothing and change nothing: 403 NOT_A_MEMBER.
    assert refused(await http.get(members_url, headers=outsider.headers), 403, 3000)
    add_self = {"user_ids": [outsider.user_id]}
    assert refused(await http.post(members_url, json=add_self, headers=outsider.headers), 403, 3000)
    assert refused(
        await http.post(f"/v1/groups/{group_id}/leave", headers=outsider.headers), 403, 3000
    )

    # Members who are not admins may not add or remove others: 403 FORBIDDEN.
    assert refused(await http.post(members_url, json=add_self, headers=member.headers), 403, 2005)
    assert refused(
        await http.delete(f"{members_url}/{owner.user_id}", headers=member.headers), 403, 2005
    )
    # Nobody removes the owner, and the owner cannot leave.
    assert refused(
        await http.post(f"/v1/groups/{group_id}/leave", headers=owner.headers), 403, 2005
    )

    # Unknown users and groups are 404; nothing is added when one user is unknown.
    ghost = unique("ghost")
    unknown_user = await http.post(
        members_url, json={"user_ids": [outsider.user_id, ghost]}, headers=owner.headers
    )
    assert refused(unknown_user, 404, 2006) and ghost in unknown_user.json()["message"]
    assert outsider.user_id not in await members_of(http, group_id, owner)
    assert refused(
        await http.delete(f"{members_url}/{outsider.user_id}", headers=owner.headers), 404, 2006
    )
    no_group = f"/v1/groups/{unique('nogroup')}/members"
    assert refused(await http.get(no_group, headers=owner.headers), 404, 2006)
    assert refused(await http.post(no_group, json=add_self, headers=owner.headers), 404, 2006)

    # Bad input is a 400; no token is a 401.
    assert refused(
        await http.post("/v1/groups", json={"name": ""}, headers=owner.headers), 400, 1005
    )
    assert refused(
        await http.post(members_url, json={"user_ids": ["no spaces!"]}, headers=owner.headers),
        400,
        1005,
    )
    assert refused(await http.get("/v1/groups"), 401, 2000)
    assert refused(await http.get(members_url, headers={"Authorization": "Bearer nope"}), 401, 2000)

    # After all that, the group is as it was.
    assert await members_of(http, group_id, member) == {
        owner.user_id: "admin",
        member.user_id: "member",
    }
