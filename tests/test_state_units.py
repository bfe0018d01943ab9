"""Sync state encoding, lookups, merging and journal replay (storage-free parts)."""
from __future__ import annotations

import numpy as np
import pytest

from exporter.state import (SUBSCRIBED, UNSUBSCRIBED, Entries, KeySet, SyncState, decode_entries, encode_confirmed,
                            encode_entries, encode_submitted, replay_journal)


def entries(keys, fp_base=100, flag=SUBSCRIBED) -> Entries:
    keys = list(keys)
    return Entries.of(keys, [(k + fp_base) % 2**64 for k in keys], [flag] * len(keys), [f"u{k}@example.com" for k in keys])


def test_encode_decode_round_trip():
    original = entries([5, 1, 2**64 - 1])
    decoded = decode_entries(encode_entries(original))
    assert decoded.keys.tolist() == [5, 1, 2**64 - 1]
    assert decoded.fingerprints.tolist() == [105, 101, (2**64 - 1 + 100) % 2**64]
    assert decoded.emails == [b"u5@example.com", b"u1@example.com", f"u{2**64 - 1}@example.com".encode()]


def test_decode_rejects_garbage():
    with pytest.raises(ValueError):
        decode_entries(b"not a state file at all")


def test_lookup_finds_known_and_zero_for_unknown():
    state = SyncState(entries([30, 10, 20]))
    fps, flags = state.lookup(np.array([10, 15, 30, 99], np.uint64))
    assert fps.tolist() == [110, 0, 130, 0]
    assert flags.tolist() == [SUBSCRIBED, 0, SUBSCRIBED, 0]


def test_merged_applies_later_confirmations_over_older():
    state = SyncState(entries([1, 2, 3]))
    state.record(entries([2, 4], fp_base=500))
    state.record(Entries.of([3], [0], [UNSUBSCRIBED], ["u3@example.com"]))
    merged = state.merged()
    by_key = dict(zip(merged.keys.tolist(), zip(merged.fingerprints.tolist(), merged.flags.tolist())))
    assert by_key == {1: (101, 1), 2: (502, 1), 3: (0, 2), 4: (504, 1)}


def test_removal_candidates_are_only_subscribed_contacts_missing_from_the_export():
    state = SyncState(entries([1, 2, 3]))
    state.record(Entries.of([4], [0], [UNSUBSCRIBED], ["u4@example.com"]))
    state = SyncState(state.merged())
    keys, emails = state.subscribed_missing_from(np.array([2], np.uint64))
    assert keys.tolist() == [1, 3] and emails == ["u1@example.com", "u3@example.com"]


def test_journal_replay_separates_confirmed_from_in_flight_and_drops_failures():
    data = (encode_submitted("b1", entries([1, 2])) + encode_submitted("b2", entries([3]))
            + encode_confirmed("b1", {"u2@example.com"}))
    replay = replay_journal(data)
    assert [e.keys.tolist() for e in replay.confirmed] == [[1]]
    assert list(replay.in_flight) == ["b2"]
    assert not replay.unreadable_tail


def test_journal_replay_survives_a_torn_last_record():
    data = encode_submitted("b1", entries([1])) + encode_confirmed("b1", set())
    torn = data + encode_submitted("b2", entries([2]))[:-7]
    replay = replay_journal(torn)
    assert [e.keys.tolist() for e in replay.confirmed] == [[1]] and replay.unreadable_tail


def test_keyset_flags_first_occurrences_across_and_within_chunks():
    seen = KeySet()
    assert seen.add_new(np.array([5, 3, 5, 9], np.uint64)).tolist() == [True, True, False, True]
    for start in range(0, 10_000, 1000):  # many chunks, so levels merge
        seen.add_new(np.arange(start + 100, start + 1100, dtype=np.uint64))
    assert seen.add_new(np.array([3, 4, 150, 20_000], np.uint64)).tolist() == [False, True, False, True]
    assert seen.sorted().tolist() == sorted({3, 4, 5, 9, 20_000, *range(100, 10_100)})
