"""A damaged sync state, end to end (Azurite + ActiveCampaign emulator over HTTP): whatever part of the file is
damaged, the run finds it unreadable, sets it aside, sends every contact, and mirror mode unsubscribes nobody; the
run after it is back to normal."""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.sample_export import write_sample_export
from exporter.list_status import ListStatus
from exporter.mapping import email_key
from exporter.settings import STATE_CONTAINER
from exporter.state import StateRows, encode_confirmed, encode_state_pieces, encode_submitted, read_state
from tests.helpers import LIST_ID, export_config, run

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
SECTIONS = ("header", "keys", "fingerprints", "flags", "refs", "emails")


def export_v(container, version: int, **changes):
    return write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=1500,
                               partitions=2, seed=21, with_stale_folder=False, bad_rows=False,
                               changes=changes or None, when=T0 + timedelta(hours=version))


def state_blobs():
    return BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"]) \
        .get_container_client(STATE_CONTAINER)


def sections(data: bytes) -> dict[str, tuple[int, int]]:
    """Where the header and each section's contents lie in a version 5 state file (start, end)."""
    at = 12 + int.from_bytes(data[8:12], "little")
    where = {"header": (12, at)}
    at += 4
    for name in SECTIONS[1:]:
        length = int.from_bytes(data[at:at + 8], "little")
        where[name] = (at + 8, at + 8 + length)
        at += 8 + length + 4
    assert at == len(data)
    return where


def flipped(data: bytes, section: str) -> bytes:
    """``data`` with one byte in the middle of ``section`` changed; in the header, a digit of the count, so the
    header is still JSON of the right shape and only its checksum tells."""
    broken = bytearray(data)
    if section == "header":
        at = data.index(b'"count":') + len(b'"count":')
        broken[at] = ord("1") if data[at] != ord("1") else ord("2")
    else:
        start, end = sections(data)[section]
        broken[(start + end) // 2] ^= 0x5A
    return bytes(broken)


def test_a_flipped_byte_in_any_section_means_a_full_run_that_unsubscribes_nobody(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("flip", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    blobs = state_blobs()
    state = blobs.get_blob_client("flip/state.bin")
    for section in SECTIONS:
        data = state.download_blob().readall()
        assert data[:8] == b"CIACST01" and sections(data)
        state.upload_blob(flipped(data, section), overwrite=True)
        emulator.reset_log()
        damaged = run(export)
        assert damaged.status == "completed", (section, damaged.errors)
        # (a damaged zlib stream, the flags', may fail to inflate before its checksum is reached)
        assert any("unreadable" in e and ("checksum" in e or section == "flags") for e in damaged.errors), \
            (section, damaged.errors)
        assert any("mirror mode unsubscribed nobody" in e for e in damaged.errors), section
        assert damaged.counts["removalSkipped"] == 0 and damaged.counts["unsubscribed"] == 0
        assert emulator.unsubscribed(LIST_ID) == set(), section
        assert emulator.subscribers(LIST_ID) == set(v1.expected), section
        assert damaged.counts["confirmed"] == len(v1.expected)  # everyone sent again
        aside = blobs.get_blob_client(f"flip/state.bin.unreadable-{damaged.run_id}")
        assert aside.download_blob().readall() == flipped(data, section)

        emulator.reset_log()
        again = run(export)  # the state was rebuilt: no crash loop, nothing resent
        assert again.status == "completed" and again.errors == [], (section, again.errors)
        assert emulator.bulk_import_requests() == []

    v2 = export_v(container, 2, drop=0.05)  # and mirror mode works again
    leavers = set(v1.expected) - set(v2.expected)
    after = run(export)
    assert after.status == "completed" and after.errors == []
    assert after.counts["unsubscribed"] == len(leavers) and emulator.unsubscribed(LIST_ID) == leavers


@pytest.mark.parametrize("junk", [b'{"count":"1500","emails":1500,"version":4,"emailChunks":[]}',
                                  b'{"count":-1,"emails":0,"version":4,"emailChunks":[]}',
                                  b'{"version":4,"emailChunks":[[1,"x"]]}',
                                  b'{"count":[[[[{"a":null}]]]],"version":4}',
                                  b'{"count":' + b"[" * 3000 + b"]" * 3000 + b"}",
                                  b"[4]"],
                         ids=["count-a-string", "count-negative", "keys-missing", "nested-junk", "deep", "a-list"])
def test_header_junk_is_unreadable_not_a_type_error(app_env, emulator, container, junk):
    v1 = export_v(container, 1)
    export = export_config("junk", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    state = state_blobs().get_blob_client("junk/state.bin")
    data = state.download_blob().readall()
    rest = data[12 + int.from_bytes(data[8:12], "little"):]
    state.upload_blob(b"CIACST01" + len(junk).to_bytes(4, "little") + junk + rest, overwrite=True)
    damaged = run(export)
    assert damaged.status == "completed", damaged.errors
    assert any("unreadable" in e for e in damaged.errors) and damaged.counts["confirmed"] == len(v1.expected)
    assert emulator.unsubscribed(LIST_ID) == set()
    again = run(export)
    assert again.status == "completed" and again.errors == []


def test_contacts_a_journal_brings_back_into_an_unreadable_state_are_not_unsubscribed(app_env, emulator,
                                                                                      container):
    # The previous run died after ActiveCampaign confirmed a batch with a contact who is not in the segment; the
    # state is unreadable, so the replayed journal is all the state this run has: that contact is a removal
    # candidate, and mirror mode must still leave them alone (nothing says they left).
    v1 = export_v(container, 1)
    export = export_config("journal", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    emulator.add_contact("elsewhere@example.net", list_id=LIST_ID, status=ListStatus.SUBSCRIBED)
    blobs = state_blobs()
    blobs.get_blob_client("journal/state.bin").upload_blob(b"CIACST01 damaged", overwrite=True)
    rows = StateRows.of([email_key("elsewhere@example.net")], [1], [ListStatus.SUBSCRIBED],
                        ["elsewhere@example.net"])
    blobs.get_blob_client("journal/journal").upload_blob(
        encode_submitted("b-1", rows) + encode_confirmed("b-1", set()), overwrite=True)
    damaged = run(export)
    assert damaged.status == "completed", damaged.errors
    assert damaged.counts["removalSkipped"] == 1 and damaged.counts["unsubscribed"] == 0
    assert emulator.list_status("elsewhere@example.net", LIST_ID) == ListStatus.SUBSCRIBED
    assert any("mirror mode unsubscribed nobody" in e for e in damaged.errors)
    again = run(export)  # now the state knows them as subscribed and gone: mirror mode takes them off
    assert again.status == "completed" and again.errors == [] and again.counts["unsubscribed"] == 1
    assert emulator.list_status("elsewhere@example.net", LIST_ID) == ListStatus.UNSUBSCRIBED


def test_a_version_4_state_in_storage_still_loads(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("v4", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    state = state_blobs().get_blob_client("v4/state.bin")
    loaded = read_state(state.download_blob())
    state.upload_blob(b"".join(encode_state_pieces(loaded, version=4)), overwrite=True)
    emulator.reset_log()
    again = run(export)
    assert again.status == "completed" and again.errors == [] and emulator.bulk_import_requests() == []
    assert b'"version":5' in state.download_blob().readall()[:100]  # saved as version 5 again


def test_a_flipped_key_in_a_version_4_state_unsubscribes_nobody(app_env, emulator, container):
    # The audit's case, on a state an older exporter wrote: version 4 has no checksums, so a flipped key used to
    # load, and mirror mode unsubscribed the contact whose email it stood by, for good. Its keys are now checked
    # against its emails when it is loaded.
    v1 = export_v(container, 1)
    export = export_config("v4flip", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    state = state_blobs().get_blob_client("v4flip/state.bin")
    v4 = bytearray(b"".join(encode_state_pieces(read_state(state.download_blob()), version=4)))
    v4[12 + int.from_bytes(v4[8:12], "little") + 8 + 800] ^= 0x5A  # a byte of the 101st key
    state.upload_blob(bytes(v4), overwrite=True)
    emulator.reset_log()
    damaged = run(export)
    assert damaged.status == "completed", damaged.errors
    assert any("keys do not match their emails" in e for e in damaged.errors), damaged.errors
    assert damaged.counts["unsubscribed"] == 0 and emulator.unsubscribed(LIST_ID) == set()
    assert emulator.subscribers(LIST_ID) == set(v1.expected)
    again = run(export)
    assert again.status == "completed" and again.errors == [] and again.counts["sent"] == 0
