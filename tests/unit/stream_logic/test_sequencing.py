"""Sequencing: gapless seqs, deterministic ids, retry dedup, crash replays."""

from __future__ import annotations

import msgspec

from schemas.conversations import direct, message_id
from schemas.errors import ErrorCode
from schemas.records import ClientMessage
from stream_logic.sequencing import (
    DEDUP_WINDOW,
    ConversationState,
    apply,
    decode_state,
    dedup_digest,
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
    assert state.window_size == DEDUP_WINDOW
    _, outcomes = run([send("m0"), send(f"m{DEDUP_WINDOW + 9}")], state, first_offset=10_000)
    # The oldest fell out of the window; the newest is still recognised.
    assert [o.kind for o in outcomes] == ["new", "retry"]


def test_state_round_trips_and_stays_small() -> None:
    state, _ = run([send(f"m{i}") for i in range(DEDUP_WINDOW)])
    raw = encode_state(state)
    assert decode_state(raw) == state
    assert len(raw) < 40 * DEDUP_WINDOW
    assert decode_state(None) == ConversationState()


def test_a_retry_in_a_full_window_gets_its_original_seq_and_ts() -> None:
    sends = [send(f"m{i}", received_ts=1_000 + i) for i in range(DEDUP_WINDOW + 40)]
    state, first = run(sends)
    _, outcomes = run([sends[100]], state, first_offset=10_000)
    assert outcomes[0].kind == "retry"
    original = first[100].message
    assert (outcomes[0].result.seq, outcomes[0].result.ts) == (original.seq, original.ts)
    assert outcomes[0].result.msg_id == original.msg_id


def test_a_digest_matching_across_two_entries_is_not_a_retry() -> None:
    state, _ = run([send("m0"), send("m1")])
    digests = state.recent_digests
    straddling = digests[4:12]  # the tail of the first entry and the head of the second
    assert state.find_recent(straddling) is None
    assert state.find_recent(dedup_digest("alice", "m1")) == (2, 1_000)


def test_states_written_before_the_packed_window_still_decode() -> None:
    state, _ = run([send(f"m{i}", received_ts=1_000 + i) for i in range(5)])
    legacy_entries = [(state.recent_digests[i * 8 : i * 8 + 8], i + 1, 1_000 + i) for i in range(5)]
    legacy = msgspec.msgpack.encode(
        [state.last_seq, state.last_ts, state.last_offset, legacy_entries]
    )
    assert decode_state(legacy) == state


def test_mismatched_conversation_is_rejected_without_using_a_seq() -> None:
    _, outcomes = run([send("a", conv_id=direct("alice", "carol")), send("b")])
    assert outcomes[0].kind == "rejected"
    assert outcomes[0].result.error_code == ErrorCode.BAD_REQUEST
    assert outcomes[1].message.seq == 1


def group_send(client_msg_id: str, **overrides: object) -> ClientMessage:
    fields: dict[str, object] = {
        "kind": "group",
        "group_id": "team",
        "to": None,
        "conv_id": "g:team",
    }
    fields.update(overrides)
    return send(client_msg_id, **fields)


def test_group_messages_of_members_get_their_own_gapless_seq() -> None:
    state = ConversationState()
    seqs = []
    for offset, message in enumerate([group_send("a"), group_send("b", sender="carol")]):
        state, outcome = apply(state, message, offset, is_member=True)
        seqs.append((outcome.kind, outcome.message.seq, outcome.message.group_id))
    assert seqs == [("new", 1, "team"), ("new", 2, "team")]
    assert outcome.message.msg_id == message_id("g:team", 2)


def test_a_non_member_is_refused_without_using_a_seq() -> None:
    state, refused = apply(ConversationState(), group_send("x"), 0, is_member=False)
    assert refused.kind == "rejected" and refused.message is None
    assert refused.result.error_code == ErrorCode.NOT_A_MEMBER
    _, accepted = apply(state, group_send("y"), 1, is_member=True)
    assert accepted.message.seq == 1


def test_unknown_membership_is_answered_unavailable() -> None:
    _, outcome = apply(ConversationState(), group_send("x"), 0, is_member=None)
    assert outcome.kind == "rejected"
    assert outcome.result.error_code == ErrorCode.UNAVAILABLE


def test_a_retry_after_leaving_still_gets_the_original_result() -> None:
    state, first = apply(ConversationState(), group_send("x"), 0, is_member=True)
    _, again = apply(state, group_send("x"), 1, is_member=False)
    assert again.kind == "retry" and again.result.seq == first.message.seq


def test_the_push_service_writes_to_any_group_but_users_cannot_pose_as_it() -> None:
    notice = group_send("n", kind="system", sender="system", sender_device="", data={"k": 1})
    _, outcome = apply(ConversationState(), notice, 0, is_member=False)
    assert outcome.kind == "new" and outcome.message.data == {"k": 1}
    # A user's group message still needs membership, whatever its sender id.
    _, posing = apply(ConversationState(), group_send("p", sender="system"), 0, is_member=False)
    assert posing.result.error_code == ErrorCode.NOT_A_MEMBER


def test_group_message_shapes_are_checked() -> None:
    bad = [
        group_send("1", conv_id="g:other"),  # conversation of another group
        group_send("2", to="bob"),  # both a user and a group
        group_send("3", kind="chat"),  # a chat message carrying a group id
        send("4", kind="group", to=None, group_id=None, conv_id="g:team"),
    ]
    _, outcomes = run(bad)
    assert [o.kind for o in outcomes] == ["rejected"] * 4
    assert {o.result.error_code for o in outcomes} <= {ErrorCode.BAD_REQUEST}


def test_broadcasts_come_only_from_the_push_service() -> None:
    notice = send("b", kind="system", sender="system", to=None, conv_id="broadcast")
    _, outcomes = run([notice, send("c", kind="chat", to=None, conv_id="broadcast")])
    assert outcomes[0].kind == "new" and outcomes[0].message.conv_id == "broadcast"
    assert outcomes[1].kind == "rejected"


def test_system_messages_use_the_recipients_system_conversation() -> None:
    _, outcomes = run(
        [send("n1", kind="system", sender="system", conv_id="s:bob", data={"type": "notice"})]
    )
    assert outcomes[0].kind == "new"
    assert outcomes[0].message.conv_id == "s:bob" and outcomes[0].message.data == {"type": "notice"}
