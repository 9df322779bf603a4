"""The nonce store: bounded, fail-closed, expiry inclusive, redelivery is not a replay."""

from __future__ import annotations

from pipeline.inbound.nonces import NonceStore, NonceVerdict

HERE = ("t", 0, 1)


def test_a_fresh_nonce_passes_and_a_second_copy_elsewhere_is_a_replay() -> None:
    store = NonceStore(10)
    assert store.check_and_add("s", "n1", 1_000, 0, HERE) is NonceVerdict.FRESH
    assert store.check_and_add("s", "n1", 1_000, 5, ("t", 0, 2)) is NonceVerdict.REPLAY
    assert store.check_and_add("s", "n1", 1_000, 5, ("t", 1, 1)) is NonceVerdict.REPLAY


def test_the_same_position_again_is_a_redelivery() -> None:
    store = NonceStore(10)
    store.check_and_add("s", "n1", 1_000, 0, HERE)
    assert store.check_and_add("s", "n1", 1_000, 10, HERE) is NonceVerdict.REDELIVERY
    assert len(store) == 1


def test_nonces_are_per_sender() -> None:
    store = NonceStore(10)
    store.check_and_add("a", "n1", 1_000, 0, HERE)
    assert store.check_and_add("b", "n1", 1_000, 0, ("t", 0, 2)) is NonceVerdict.FRESH


def test_an_entry_lives_until_its_expiry_inclusive() -> None:
    store = NonceStore(10)
    store.check_and_add("s", "n1", 1_000, 0, HERE)
    assert store.check_and_add("s", "n1", 1_000, 1_000, ("t", 0, 2)) is NonceVerdict.REPLAY
    assert store.check_and_add("s", "n1", 2_000, 1_001, ("t", 0, 3)) is NonceVerdict.FRESH


def test_full_of_live_nonces_fails_closed_and_keeps_them() -> None:
    store = NonceStore(2)
    store.check_and_add("s", "a", 1_000, 0, ("t", 0, 1))
    store.check_and_add("s", "b", 1_000, 0, ("t", 0, 2))
    assert store.check_and_add("s", "c", 1_000, 0, ("t", 0, 3)) is NonceVerdict.FULL
    assert store.check_and_add("s", "a", 1_000, 0, ("t", 0, 4)) is NonceVerdict.REPLAY
    assert store.check_and_add("s", "b", 1_000, 0, ("t", 0, 5)) is NonceVerdict.REPLAY
    assert len(store) == 2


# Entries are evicted a second at a time: one may outlive its expiry by up to a second
# (remembered longer, never shorter), so these tests use whole seconds.

def test_expired_entries_make_room_first() -> None:
    store = NonceStore(2)
    store.check_and_add("s", "old", 1_000, 0, ("t", 0, 1))
    store.check_and_add("s", "live", 10_000, 0, ("t", 0, 2))
    assert store.check_and_add("s", "new", 12_000, 1_001, ("t", 0, 3)) is NonceVerdict.FRESH
    assert store.check_and_add("s", "live", 10_000, 1_001, ("t", 0, 9)) is NonceVerdict.REPLAY
    assert len(store) == 2


def test_eviction_follows_expiry_not_insertion_order() -> None:
    store = NonceStore(3)
    store.check_and_add("s", "late", 50_000, 0, ("t", 0, 1))
    store.check_and_add("s", "early", 1_000, 0, ("t", 0, 2))
    store.check_and_add("s", "mid", 20_000, 0, ("t", 0, 3))
    assert store.check_and_add("s", "x", 60_000, 1_500, ("t", 0, 4)) is NonceVerdict.FRESH
    assert store.check_and_add("s", "late", 50_000, 1_500, ("t", 0, 5)) is NonceVerdict.REPLAY
    assert store.check_and_add("s", "mid", 20_000, 1_500, ("t", 0, 6)) is NonceVerdict.REPLAY


def test_one_sender_cannot_take_the_room_of_the_others() -> None:
    store = NonceStore(4, sender_capacity=2)
    assert store.check_and_add("flood", "1", 1_000, 0, ("t", 0, 1)) is NonceVerdict.FRESH
    assert store.check_and_add("flood", "2", 1_000, 0, ("t", 0, 2)) is NonceVerdict.FRESH
    assert store.check_and_add("flood", "3", 1_000, 0, ("t", 0, 3)) is NonceVerdict.SENDER_FULL
    assert store.check_and_add("b", "1", 1_000, 0, ("t", 0, 4)) is NonceVerdict.FRESH
    assert store.check_and_add("c", "1", 1_000, 0, ("t", 0, 5)) is NonceVerdict.FRESH
    assert store.check_and_add("d", "1", 1_000, 0, ("t", 0, 6)) is NonceVerdict.FULL
    # Once the flood's nonces expire, its share is free again.
    assert store.check_and_add("flood", "4", 9_000, 1_001, ("t", 0, 7)) is NonceVerdict.FRESH
    assert store.held_by("flood") == 1


def test_each_partition_forgets_by_its_own_clock() -> None:
    """A backlog partition judged by old append times keeps its nonces while another
    partition's clock is hours ahead."""
    store = NonceStore(10)
    hour = 3_600_000
    assert store.check_and_add("s", "old", 300_000, 0, ("t", 0, 1)) is NonceVerdict.FRESH
    assert store.check_and_add("s", "new", hour + 300_000, hour, ("t", 1, 1)) is (
        NonceVerdict.FRESH)
    assert store.check_and_add("s", "old", 300_000, 10_000, ("t", 0, 2)) is NonceVerdict.REPLAY


def test_forgetting_a_partition_frees_its_room() -> None:
    store = NonceStore(10)
    store.check_and_add("s", "a", 1_000, 0, ("t", 0, 1))
    store.check_and_add("s", "b", 1_000, 0, ("t", 1, 1))
    store.forget_partitions([("t", 0)])
    assert (len(store), store.held_by("s")) == (1, 1)
    assert store.check_and_add("s", "a", 1_000, 0, ("t", 0, 1)) is NonceVerdict.FRESH
