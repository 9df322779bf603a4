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


def test_expired_entries_make_room_first() -> None:
    store = NonceStore(2)
    store.check_and_add("s", "old", 100, 0, ("t", 0, 1))
    store.check_and_add("s", "live", 1_000, 0, ("t", 0, 2))
    assert store.check_and_add("s", "new", 1_200, 101, ("t", 0, 3)) is NonceVerdict.FRESH
    assert store.check_and_add("s", "live", 1_000, 101, ("t", 0, 9)) is NonceVerdict.REPLAY
    assert len(store) == 2


def test_eviction_follows_expiry_not_insertion_order() -> None:
    store = NonceStore(3)
    store.check_and_add("s", "late", 5_000, 0, ("t", 0, 1))
    store.check_and_add("s", "early", 100, 0, ("t", 0, 2))
    store.check_and_add("s", "mid", 2_000, 0, ("t", 0, 3))
    assert store.check_and_add("s", "x", 6_000, 150, ("t", 0, 4)) is NonceVerdict.FRESH
    assert store.check_and_add("s", "late", 5_000, 150, ("t", 0, 5)) is NonceVerdict.REPLAY
    assert store.check_and_add("s", "mid", 2_000, 150, ("t", 0, 6)) is NonceVerdict.REPLAY
