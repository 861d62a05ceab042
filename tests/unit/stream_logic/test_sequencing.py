"""Sequencing: gapless seqs, deterministic ids, retry dedup, crash replays."""

from __future__ import annotations

from schemas.conversations import direct, message_id
from schemas.errors import ErrorCode
from schemas.records import ClientMessage
from stream_logic.sequencing import (
    DEDUP_WINDOW,
    ConversationState,
    apply,
    decode_state,
    encode_state,
)

CONV = direct("alice", "bob")


def send(client_msg_id: str, *, received_ts: int = 1_000, **overrides: object) -> ClientMessage:
    fields: dict[str, object] = {
        "client_msg_id": client_msg_id,
        "sender": "alice",
        "sender_device": "phone",
        "conv_id": CONV,
        "to": "bob",
        "text": f"text {client_msg_id}",
        "received_ts": received_ts,
        "reply_connector": "c1",
    }
    fields.update(overrides)
    return ClientMessage(**fields)  # type: ignore[arg-type]


def run(
    messages: list[ClientMessage], state: ConversationState | None = None, first_offset: int = 0
):
    state = state or ConversationState()
    outcomes = []
    for offset, message in enumerate(messages, start=first_offset):
        state, outcome = apply(state, message, offset)
        outcomes.append(outcome)
    return state, outcomes


def test_seqs_start_at_one_and_have_no_gaps() -> None:
    state, outcomes = run([send(f"m{i}") for i in range(5)])
    assert [o.message.seq for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.kind for o in outcomes] == ["new"] * 5
    assert state.last_seq == 5
    assert outcomes[2].message.msg_id == message_id(CONV, 3)
    assert outcomes[2].result.seq == 3 and outcomes[2].result.msg_id == outcomes[2].message.msg_id


def test_a_retry_returns_the_original_message_and_sends_nothing_new() -> None:
    state, outcomes = run([send("a"), send("b"), send("a", received_ts=9_999)])
    assert [o.kind for o in outcomes] == ["new", "new", "retry"]
    assert outcomes[2].message is None
    assert outcomes[2].result.seq == 1
    assert outcomes[2].result.msg_id == outcomes[0].message.msg_id
    assert outcomes[2].result.ts == outcomes[0].message.ts
    assert state.last_seq == 2


def test_same_client_id_from_another_sender_is_a_new_message() -> None:
    _, outcomes = run([send("a"), send("a", sender="bob", to="alice")])
    assert [o.kind for o in outcomes] == ["new", "new"]


def test_timestamps_never_go_backwards_within_a_conversation() -> None:
    _, outcomes = run([send("a", received_ts=5_000), send("b", received_ts=4_000)])
    assert [o.message.ts for o in outcomes] == [5_000, 5_000]


def test_replaying_from_an_old_state_reproduces_identical_messages() -> None:
    messages = [send(f"m{i}", received_ts=1_000 + i) for i in range(6)]
    _, first = run(messages)
    # Crash after the outputs of the last 3 but before their state was written:
    # the replay starts from the state after the first 3.
    state_after_three, _ = run(messages[:3])
    restored = decode_state(encode_state(state_after_three))
    _, replayed = run(messages[3:], restored, first_offset=3)
    assert [o.message for o in replayed] == [o.message for o in first[3:]]


def test_records_already_applied_are_skipped_as_replays() -> None:
    messages = [send(f"m{i}") for i in range(4)]
    state, _ = run(messages)
    again, outcomes = run(messages[2:], state, first_offset=2)
    assert [o.kind for o in outcomes] == ["replay", "replay"]
    assert again == state


def test_dedup_window_is_bounded() -> None:
    state, _ = run([send(f"m{i}") for i in range(DEDUP_WINDOW + 10)])
    assert len(state.recent) == DEDUP_WINDOW
    _, outcomes = run([send("m0"), send(f"m{DEDUP_WINDOW + 9}")], state, first_offset=10_000)
    # The oldest fell out of the window; the newest is still recognised.
    assert [o.kind for o in outcomes] == ["new", "retry"]


def test_state_round_trips_and_stays_small() -> None:
    state, _ = run([send(f"m{i}") for i in range(DEDUP_WINDOW)])
    raw = encode_state(state)
    assert decode_state(raw) == state
    assert len(raw) < 40 * DEDUP_WINDOW
    assert decode_state(None) == ConversationState()


def test_mismatched_conversation_is_rejected_without_using_a_seq() -> None:
    _, outcomes = run([send("a", conv_id=direct("alice", "carol")), send("b")])
    assert outcomes[0].kind == "rejected"
    assert outcomes[0].result.error_code == ErrorCode.BAD_REQUEST
    assert outcomes[1].message.seq == 1


def test_group_messages_are_refused_until_groups_exist() -> None:
    _, outcomes = run([send("g", kind="group", group_id="team", to=None, conv_id="g:team")])
    assert outcomes[0].kind == "rejected"
    assert outcomes[0].result.error_code == ErrorCode.UNAVAILABLE


def test_system_messages_use_the_recipients_system_conversation() -> None:
    _, outcomes = run(
        [send("n1", kind="system", sender="system", conv_id="s:bob", data={"type": "notice"})]
    )
    assert outcomes[0].kind == "new"
    assert outcomes[0].message.conv_id == "s:bob" and outcomes[0].message.data == {"type": "notice"}
