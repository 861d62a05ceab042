"""What the application sees once, and where a resync starts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from client.delivery import ConversationCursor, DeliveryTracker
from schemas.conversations import message_id


def test_a_message_seen_again_is_a_duplicate() -> None:
    tracker = DeliveryTracker()
    assert tracker.accept("m1", "p:a:b", 1)
    assert not tracker.accept("m1", "p:a:b", 1)


def test_the_same_place_in_a_conversation_is_a_duplicate_whatever_its_id() -> None:
    tracker = DeliveryTracker()
    assert tracker.accept("m1", "p:a:b", 1)
    assert not tracker.accept("other", "p:a:b", 1)
    assert tracker.accept("m2", "p:a:c", 1)  # another conversation


def test_messages_out_of_order_are_all_accepted_once() -> None:
    tracker = DeliveryTracker()
    # A live push (seq 6) overtaking an offline one (seq 5) must not hide it.
    assert tracker.accept("m6", "p:a:b", 6)
    assert tracker.accept("m5", "p:a:b", 5)
    assert not tracker.accept("m5", "p:a:b", 5)


def test_resync_starts_after_the_contiguous_run() -> None:
    tracker = DeliveryTracker()
    for seq in (3, 4, 5, 8):
        tracker.record(f"m{seq}", "p:a:b", seq)
    tracker.record("s1", "p:a:c", 1)
    assert tracker.resume_points() == {"p:a:b": 5, "p:a:c": 1}
    for seq in (6, 7):
        tracker.record(f"m{seq}", "p:a:b", seq)
    assert tracker.resume_points()["p:a:b"] == 8


def test_old_ids_are_forgotten_beyond_the_limit_but_seqs_still_dedup() -> None:
    tracker = DeliveryTracker(max_remembered_ids=2)
    for seq in (1, 2, 3):
        tracker.record(message_id("p:a:b", seq), "p:a:b", seq)
    assert not tracker.accept(message_id("p:a:b", 1), "p:a:b", 1)


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=80))
def test_a_cursor_knows_exactly_the_seqs_it_was_given(seqs: list[int]) -> None:
    cursor = ConversationCursor()
    for seq in seqs:
        cursor.add(seq)
    assert {s for s in range(0, 62) if cursor.seen(s)} == set(seqs)
    if seqs:
        run_end = seqs[0]
        while run_end + 1 in seqs:
            run_end += 1
        assert cursor.resume_after >= run_end
        assert cursor.resume_after in seqs
