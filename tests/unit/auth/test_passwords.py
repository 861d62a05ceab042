"""Password hashing: the right password logs in, anything else does not."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from auth.passwords import (
    check_password_policy,
    hash_password,
    hash_password_async,
    needs_rehash,
    verify_password,
    verify_password_async,
)
from schemas.errors import ErrorCode, ImError


def test_the_right_password_matches_and_a_wrong_one_does_not() -> None:
    stored = hash_password("correct horse battery")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse battery ")
    assert not verify_password(stored, "Correct horse battery")


def test_hashes_are_salted_and_never_contain_the_password() -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second
    assert "same password" not in first
    assert first.startswith("$argon2id$")


def test_unknown_user_or_garbage_hash_never_matches() -> None:
    assert not verify_password(None, "whatever-password")
    assert not verify_password("not-a-hash", "whatever-password")
    assert not verify_password("", "")


def test_hash_made_with_weaker_parameters_needs_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("old password")
    assert verify_password(weak, "old password")
    assert needs_rehash(weak)
    assert not needs_rehash(hash_password("new password"))


async def test_async_variants_give_the_same_answers() -> None:
    stored = await hash_password_async("async password")
    assert await verify_password_async(stored, "async password")
    assert not await verify_password_async(stored, "other password")


@pytest.mark.parametrize("password", ["", "short", "x" * 7, "x" * 257])
def test_password_policy_refuses_too_short_or_too_long(password: str) -> None:
    with pytest.raises(ImError) as raised:
        check_password_policy(password)
    assert raised.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("password", ["x" * 8, "x" * 256, "pässwörd-ünïcode"])
def test_password_policy_accepts_8_to_256_characters(password: str) -> None:
    check_password_policy(password)
