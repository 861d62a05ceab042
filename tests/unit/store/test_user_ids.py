import pytest

from schemas.errors import ErrorCode, ImError
from store.users import check_user_id


@pytest.mark.parametrize("user_id", ["alice", "Bob_2", "a.b-c", "x" * 64])
def test_valid_ids_pass(user_id: str) -> None:
    check_user_id(user_id)


@pytest.mark.parametrize("user_id", ["", "x" * 65, "a:b", "a b", "ü", "system", "SYSTEM"])
def test_bad_or_reserved_ids_are_refused(user_id: str) -> None:
    with pytest.raises(ImError) as error:
        check_user_id(user_id)
    assert error.value.code is ErrorCode.BAD_REQUEST
