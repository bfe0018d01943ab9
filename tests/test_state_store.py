"""The sync state in blob storage (Azurite): saved in blocks as it is encoded, replaced only if nobody else did."""
from __future__ import annotations

import numpy as np
import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.storage.blob import BlobServiceClient

from exporter.list_status import ListStatus
from exporter.settings import STATE_CONTAINER
from exporter.state import StateRows, StateStore, SyncState
from exporter.storage import CHUNK_BYTES, blob_service


def state_of(count: int, fp: int = 7) -> SyncState:
    keys = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # spread over the key space
    return SyncState(StateRows.of(keys.tolist(), [fp] * count, [ListStatus.SUBSCRIBED] * count,
                                [f"person{i}@example.com" for i in range(count)]))


@pytest.fixture
def store(app_settings) -> StateStore:
    store = StateStore(blob_service(app_settings.app_storage))
    store.ensure_container()  # a run creates it when it takes the lock
    return store


def test_a_state_larger_than_a_block_is_saved_in_blocks_and_loads_back(store, app_settings, unique_name):
    state = state_of(300_000)  # ~7 MB encoded: more than one upload block
    etag = store.save(unique_name, state, None)
    blob = BlobServiceClient.from_connection_string(app_settings.app_storage.connection_string).get_blob_client(
        STATE_CONTAINER, f"{unique_name}/state.bin")
    committed, _ = blob.get_block_list("committed")
    assert blob.get_blob_properties().size > CHUNK_BYTES and len(committed) >= 2
    loaded = store.load(unique_name, "run-2")
    assert loaded.etag == etag and loaded.problem is None
    assert np.array_equal(loaded.state.keys, state.keys)
    assert loaded.state.rows().emails.tolist() == state.rows().emails.tolist()


def test_saving_over_a_state_someone_else_replaced_fails_and_keeps_theirs(store, unique_name):
    first = store.save(unique_name, state_of(10, fp=1), None)
    theirs = store.save(unique_name, state_of(20, fp=2), first)
    with pytest.raises(ResourceModifiedError):
        store.save(unique_name, state_of(300_000, fp=3), first)  # our etag is stale
    with pytest.raises(ResourceModifiedError):
        store.save(unique_name, state_of(30, fp=4), None)  # we saw no state, but one appeared
    kept = store.load(unique_name, "run-3")
    assert kept.etag == theirs and len(kept.state) == 20 and set(kept.state.fingerprints.tolist()) == {2}
