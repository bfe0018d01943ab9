"""The Customer Insights export reader and the sample export generator, against a real Azurite."""
from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from azure.storage.blob import ContainerClient, StorageStreamDownloader
from email_validator import validate_email

from devtools.sample_export import COLUMN_NAMES, STALE_DOMAIN, write_sample_export
from exporter.errors import SourceError
from exporter.mapping import Contact, Mapper
from exporter.settings import Mapping
from exporter.source import (
    ExportSource,
    RawRow,
    iter_rows,
    open_source,
    resolve_location,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
ACCOUNT = "devstoreaccount1"


@pytest.fixture
def storage(azurite):
    return azurite


# ---------------------------------------------------------------------------------------------------------------------
# helpers: hand-written exports


def put(container: ContainerClient, name: str, data: bytes | str) -> None:
    container.upload_blob(name, data.encode("utf-8") if isinstance(data, str) else data, overwrite=True)


def csv_text(rows: list[list[str]], terminator: str = "\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=terminator).writerows(rows)
    return out.getvalue()


def entity(name: str, columns: list[str], locations: list[str] = (), header: bool | None = None) -> dict:
    partition_extra = {} if header is None else {"fileFormatSettings": {"$type": "CsvFormatSettings",
                                                                       "columnHeaders": header}}
    return {
        "$type": "LocalEntity",
        "name": name,
        "attributes": [{"name": c, "dataType": "string"} for c in columns],
        "partitions": [
            {"name": f"{name}_{i}", "location": loc, "refreshTime": f"2026-03-0{i}T06:00:00Z", **partition_extra}
            for i, loc in enumerate(locations, start=1)
        ],
    }


def write_model(container: ContainerClient, path: str, *entities: dict, modified: str = "2026-03-01T06:00:00Z") -> None:
    put(container, f"{path}/model.json", json.dumps({"name": "cdm", "version": "1.0", "modifiedTime": modified,
                                                      "entities": list(entities)}))


def blob_url(container: ContainerClient, name: str) -> str:
    return f"{container.url}/{quote(name)}"


def one_partition_export(container: ContainerClient, data: bytes | str, header: bool | None = None,
                         columns: list[str] = ("CustomerId", "Email", "Note")) -> ExportSource:
    name = "CI_1/x/E/2026/03/01/0600/E_1.csv"
    put(container, name, data)
    write_model(container, "CI_1/x", entity("E", list(columns), [blob_url(container, name)], header))
    return open_source(container, "CI_1/x", None)


def source_error(container: ContainerClient, path: str, entity_name: str | None = None) -> str:
    with pytest.raises(SourceError) as caught:
        open_source(container, path, entity_name)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# model.json and the generator


def test_model_gives_columns_partitions_in_model_order_and_refresh_time(container):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", rows=200, partitions=3, when=T0)
    source = open_source(container, "/CustomerInsights_1/vip/", None)
    assert source.columns == COLUMN_NAMES and source.columns[:2] == ["CustomerId", "PrimaryEmail"]
    assert source.partitions == sample.partitions
    assert [p.rsplit("/", 1)[-1] for p in source.partitions] == ["VipCustomers_1.csv", "VipCustomers_2.csv",
                                                                  "VipCustomers_3.csv"]
    assert all(p.startswith("CustomerInsights_1/vip/VipCustomers/2026/03/01/0600/") for p in source.partitions)
    assert (source.entity, source.has_header, source.container) == ("VipCustomers", False, container.container_name)
    assert source.model_refreshed.startswith("2026-03-01T06:00:00")
    # The path of model.json itself is accepted too.
    assert open_source(container, "CustomerInsights_1/vip/model.json", "vipcustomers").partitions == sample.partitions


def test_reader_yields_what_the_generator_promises_and_no_stale_rows(container):
    sample = write_sample_export(container, path="CI_2/vip", rows=3000, partitions=3, seed=5, when=T0)
    source = open_source(container, sample.path, None)
    rows = list(iter_rows(container, source))
    assert len(rows) == sample.total_rows == 3000
    assert [r.record for r in rows if r.partition == source.partitions[0]] == list(range(1, 1001))

    mapper = Mapper(Mapping.model_validate({"email": "PrimaryEmail", "firstName": "FirstName",
                                            "lastName": "LastName", "phone": "Phone"}), source.columns, 3)
    contacts, rejected = {}, []
    for row in rows:
        result = mapper.malformed(row.values, row.error) if row.error else mapper.map_row(row.values)
        if isinstance(result, Contact) and result.email in contacts:  # the pipeline's diff stage does this
            result = Mapper.duplicate(result)
        if isinstance(result, Contact):
            contacts[result.email] = result.payload
        else:
            rejected.append((result.customer_id, result.reason.value))
    assert rejected == sample.rejected
    assert {kind for _, kind in rejected} == {"missing_email", "invalid_email", "duplicate_email", "malformed_row"}
    assert [kind for _, kind in rejected].count("malformed_row") == 2
    assert set(contacts) == set(sample.expected)
    for email, payload in contacts.items():
        values = sample.expected[email]
        assert (payload["first_name"], payload["last_name"], payload["phone"]) == (
            values["FirstName"], values["LastName"], values["Phone"])

    assert sample.stale_emails and all(e.endswith("@" + STALE_DOMAIN) for e in sample.stale_emails)
    read_emails = {r.values[1].strip().lower() for r in rows if len(r.values) > 1}
    assert not read_emails & sample.stale_emails
    assert all(p not in source.partitions for p in sample.stale_partitions)


def test_generated_data_is_realistic_and_deterministic(container):
    sample = write_sample_export(container, path="CI_3/vip", rows=2000, partitions=2, seed=9, when=T0)
    again = write_sample_export(container, path="CI_3/vip", rows=2000, partitions=2, seed=9, when=T0)
    assert dict(again.expected) == dict(sample.expected) and again.rejected == sample.rejected
    values = list(sample.expected.values())
    names = {v["FirstName"] for v in values} | {v["LastName"] for v in values}
    assert {"José", "Zoë", "Øyvind", "李"} <= names
    assert any("\n" in v["PostalAddress"] for v in values) and any("," in v["City"] for v in values)
    assert any('"' in v["Notes"] for v in values)
    written = [v["PrimaryEmail"] for v in values]
    assert any(e != e.strip() for e in written) and any(e.strip() != e.strip().lower() for e in written)
    for email in itertools.islice(sample.expected, 0, None, 97):
        assert validate_email(email, check_deliverability=False).normalized == email
    ids = [r.values[0] for r in iter_rows(container, open_source(container, sample.path, None))]
    assert len(set(ids)) == len(ids) == 2000
    # A header row is written and declared on request, and skipped by the reader.
    headed = write_sample_export(container, path="CI_3/headed", rows=50, partitions=1, columns_header=True,
                                 with_stale_folder=False, when=T0)
    source = open_source(container, headed.path, None)
    rows = list(iter_rows(container, source))
    assert source.has_header and len(rows) == 50 and rows[0].values[0] != "CustomerId" and rows[0].line == 2


def test_a_later_export_with_changes_replaces_the_current_one(container):
    v1 = write_sample_export(container, path="CI_4/vip", rows=1000, partitions=2, seed=3, bad_rows=False,
                             with_stale_folder=False, when=T0)
    v2 = write_sample_export(container, path="CI_4/vip", rows=1000, partitions=2, seed=3, bad_rows=False,
                             with_stale_folder=False, when=T0 + timedelta(hours=6),
                             changes={"modify": [100, 200, 300], "drop": [5, 6], "add": 7})
    assert v1.rejected == [(cid, "duplicate_email") for cid, _ in v1.rejected]  # bad_rows=False: duplicates only
    assert v2.total_rows == 1000 - 2 + 7
    source = open_source(container, "CI_4/vip", None)
    assert source.partitions == v2.partitions and source.model_refreshed.startswith("2026-03-01T12:00")
    read = {r.values[1].strip().lower(): r.values for r in iter_rows(container, source)}
    assert set(v2.expected) <= set(read)
    changed = {e for e, values in v2.expected.items() if v1.expected.get(e) != values}
    assert len(changed) == 3 + 7 and len(set(v1.expected) - set(v2.expected)) == 2
    for email in changed:
        assert read[email] == [v2.expected[email][c] for c in COLUMN_NAMES]


# ---------------------------------------------------------------------------------------------------------------------
# partition locations


@pytest.mark.parametrize("url", [
    "https://acct.dfs.core.windows.net/exports/CI%201/a%20b/E%C3%BC/2026/E%C3%BC_1.csv",
    "https://acct.blob.core.windows.net/exports/CI%201/a%20b/E%C3%BC/2026/E%C3%BC_1.csv?sv=2024&sig=x",
    "http://127.0.0.1:10000/devstoreaccount1/exports/CI%201/a%20b/E%C3%BC/2026/E%C3%BC_1.csv",
    "http://localhost:10000/acct/exports/CI 1/a b/Eü/2026/Eü_1.csv",
    "abfss://exports@acct.dfs.core.windows.net/CI%201/a%20b/E%C3%BC/2026/E%C3%BC_1.csv",
    "E%C3%BC/2026/E%C3%BC_1.csv",  # relative to model.json
])
def test_locations_resolve_to_blob_names_in_the_container(url):
    assert resolve_location(url, "exports", "acct", "CI 1/a b") == "CI 1/a b/Eü/2026/Eü_1.csv"


def test_plus_and_percent_in_names_survive_decoding():
    url = "https://acct.dfs.core.windows.net/exports/CI/a%2Bb%25c%23d.csv"
    assert resolve_location(url, "exports", "acct") == "CI/a+b%c#d.csv"


@pytest.mark.parametrize("url", [
    "https://acct.dfs.core.windows.net/other/CI/E_1.csv",
    "http://127.0.0.1:10000/devstoreaccount1/other/CI/E_1.csv",
    "https://acct.blob.core.windows.net/exports",
    "../../escape.csv",
])
def test_locations_outside_the_container_are_refused(url):
    with pytest.raises(SourceError, match="outside container 'exports'"):
        resolve_location(url, "exports", "acct", "CI")


def test_encoded_dfs_and_blob_urls_read_the_right_blobs(container):
    names = ["CI 5/Mein Export/Kündigung/2026/03/01/0600/Kündigung_1.csv",
             "CI 5/Mein Export/Kündigung/2026/03/01/0600/Kündigung+2.csv"]
    put(container, names[0], "c1,a@example.com\n")
    put(container, names[1], "c2,b@example.com\n")
    host = container.container_name
    locations = [f"https://{ACCOUNT}.dfs.core.windows.net/{host}/{quote(names[0])}",
                 f"https://{ACCOUNT}.blob.core.windows.net/{host}/{quote(names[1])}"]
    write_model(container, "CI 5/Mein Export", entity("Kündigung", ["CustomerId", "Email"], locations))
    source = open_source(container, "CI 5/Mein Export", "Kündigung")
    assert source.partitions == names
    assert [(r.values, r.partition) for r in iter_rows(container, source)] == [
        (["c1", "a@example.com"], names[0]), (["c2", "b@example.com"], names[1])]


def test_partition_outside_the_configured_container_is_a_clear_error(container):
    outside = "https://acct.dfs.core.windows.net/elsewhere/E_1.csv"
    write_model(container, "CI_6/x", entity("E", ["CustomerId"], [outside]))
    message = source_error(container, "CI_6/x")
    assert "outside container" in message and "'elsewhere'" in message and "source.container" in message


# ---------------------------------------------------------------------------------------------------------------------
# current export only; fallback to the newest folder


def test_fallback_reads_only_the_newest_timestamp_folder_in_natural_order(container):
    base = "CI_7/x/E"
    put(container, f"{base}/2025/12/31/2359/E_1.csv", "old,old@stale.example.net\n")
    put(container, f"{base}/2026/01/02/0900/E_1.csv", "older,older@stale.example.net\n")
    put(container, f"{base}/2026/02/01/0000/_SUCCESS", "")  # newest, but without CSV: still being written
    for n in (1, 2, 10):
        put(container, f"{base}/2026/01/10/0800/E_{n}.csv", f"c{n},e{n}@example.com\n")
    put(container, f"{base}/2026/01/10/0800/notes.txt", "not a partition")
    write_model(container, "CI_7/x", entity("E", ["CustomerId", "Email"]), modified="2026-01-10T08:00:00Z")
    source = open_source(container, "CI_7/x", None)
    assert source.partitions == [f"{base}/2026/01/10/0800/E_{n}.csv" for n in (1, 2, 10)]
    assert [r.values[0] for r in iter_rows(container, source)] == ["c1", "c2", "c10"]
    assert source.model_refreshed == "2026-01-10T08:00:00Z"


def test_older_folders_with_the_same_partition_names_do_not_leak_in(container):
    sample = write_sample_export(container, path="CI_8/vip", rows=120, partitions=2, seed=2, when=T0)
    assert [p.rsplit("/", 1)[-1] for p in sample.stale_partitions] == [p.rsplit("/", 1)[-1] for p in sample.partitions]
    emails = {r.values[1].strip().lower() for r in iter_rows(container, open_source(container, sample.path, None))
              if len(r.values) > 1}
    assert emails and not any(STALE_DOMAIN in e for e in emails)


# ---------------------------------------------------------------------------------------------------------------------
# CSV parsing


def test_csv_edge_cases_round_trip_exactly(container):
    rows = [
        ["1", "José@Example.com", 'He said "hi", then left'],
        ["2", "  zoe@example.org ", "line one\nline two\r\nline three"],
        ["3", "li@example.net", "李, 北京 — 🙂"],
        ["4", "", ""],
        ["5", "øyvind@example.com", '"quoted" start, and ""double""'],
    ]
    data = "\ufeff" + csv_text(rows[:2], "\r\n") + "\r\n\n" + csv_text(rows[2:], "\r\n")
    source = one_partition_export(container, data.encode("utf-8"))
    read = list(iter_rows(container, source))
    assert [r.values for r in read] == rows
    assert [r.record for r in read] == [1, 2, 3, 4, 5]
    assert [r.line for r in read] == [1, 2, 7, 8, 9]  # the quoted newlines of record 2 span lines 2-4; 5-6 blank
    assert all(r.error == "" and r.partition == source.partitions[0] for r in read)


def test_header_row_is_skipped_when_the_model_says_so(container):
    source = one_partition_export(container, "\ufeffCustomerId,Email,Note\n1,a@example.com,x\n", header=True)
    assert source.has_header
    assert [(r.values, r.record, r.line) for r in iter_rows(container, source)] == [(["1", "a@example.com", "x"], 1, 2)]


def test_header_declared_through_cdm_traits(container):
    name = "CI_9/x/E/2026/03/01/0600/E_1.csv"
    put(container, name, "CustomerId,Email\n1,a@example.com\n")
    model_entity = entity("E", ["CustomerId", "Email"], [blob_url(container, name)])
    model_entity["partitions"][0]["cdm:traits"] = [
        {"traitReference": "is.partition.format.CSV", "arguments": [{"name": "columnHeaders", "value": "true"}]}]
    write_model(container, "CI_9/x", model_entity)
    source = open_source(container, "CI_9/x", None)
    assert source.has_header and [r.values for r in iter_rows(container, source)] == [["1", "a@example.com"]]


def test_without_the_header_flag_a_header_line_is_data(container):
    source = one_partition_export(container, "CustomerId,Email,Note\n1,a@example.com,x\n")
    assert not source.has_header
    assert [r.values[0] for r in iter_rows(container, source)] == ["CustomerId", "1"]


def test_header_that_disagrees_with_the_model_stops_the_run(container):
    source = one_partition_export(container, "Email,CustomerId,Note\na@example.com,1,x\n", header=True)
    with pytest.raises(SourceError, match="does not match the columns in model.json"):
        list(iter_rows(container, source))


def test_broken_rows_are_yielded_with_their_values_not_dropped(container):
    data = "1,a@example.com,x\n2,b@example.com\n3,c@example.com,x,extra\n4,d@example.com,y\n"
    read = list(iter_rows(container, one_partition_export(container, data)))
    assert [len(r.values) for r in read] == [3, 2, 4, 3]
    assert read[1].values == ["2", "b@example.com"] and read[2].record == 3 and not read[2].error


def test_unparseable_records_become_error_rows_and_parsing_continues(container):
    data = '1,a@example.com,ok\n2,"b@example.com"junk,x\n3,c@example.com,n\x00ul\n4,d@example.com,"never closed\n'
    read = list(iter_rows(container, one_partition_export(container, data)))
    assert [r.values for r in read] == [
        ["1", "a@example.com", "ok"], [], ["3", "c@example.com", "n\x00ul"], []]
    assert [(r.record, r.line) for r in read] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert "unreadable CSV" in read[1].error and "unexpected end of data" in read[3].error


def test_invalid_utf8_names_the_partition_and_exact_byte_offset(container):
    good = "".join(f"{i},user{i}@example.com,Zoë\n" for i in range(3000)).encode("utf-8")
    data = b"\xef\xbb\xbf" + good + b"3000,bad@example.com,Caf\xe9\n"
    source = one_partition_export(container, data)
    seen = []
    with pytest.raises(SourceError) as caught:
        for row in iter_rows(container, source, chunk_bytes=4096):
            seen.append(row)  # noqa: PERF402 (one at a time: the rows read before the error must be kept)
    message = str(caught.value)
    bad_offset = data.index(b"\xe9")
    assert 0 < len(seen) <= 3000 and seen[-1].values[2] == "Zoë"  # rows before the damage were read
    assert source.partitions[0] in message and "0xe9" in message
    assert f"byte offset {bad_offset};" in message
    assert "re-run the export" in message


def test_empty_partition_yields_nothing(container):
    assert list(iter_rows(container, one_partition_export(container, b""))) == []


# ---------------------------------------------------------------------------------------------------------------------
# streaming


def test_partitions_are_streamed_in_ranges_not_downloaded_whole(storage, container, monkeypatch):
    fetched: list[int] = []

    def count_bytes(response) -> None:
        if response.http_request.method == "GET" and "comp=" not in response.http_request.url:
            fetched.append(int(response.http_response.headers.get("Content-Length", 0)))

    client = ContainerClient.from_connection_string(storage.connection_string, container.container_name,
                                                    raw_response_hook=count_bytes)
    rows = [[str(i), f"user{i}@example.com", f'note "{i}", with\nnewline'] for i in range(40_000)]
    data = csv_text(rows).encode("utf-8")
    chunk = 128 * 1024
    assert len(data) > 15 * chunk
    source = one_partition_export(client, data)

    def no_whole_downloads(*args, **kwargs):
        raise AssertionError("the reader must stream, not readall()/content_as_bytes()")

    monkeypatch.setattr(StorageStreamDownloader, "readall", no_whole_downloads)
    monkeypatch.setattr(StorageStreamDownloader, "content_as_bytes", no_whole_downloads)
    fetched.clear()
    reader = iter_rows(client, source, chunk_bytes=chunk)
    first = next(reader)
    assert first.values == rows[0]
    assert 0 < sum(fetched) <= 2 * chunk  # the current range and at most one prefetched
    rest = list(reader)
    assert [r.values for r in rest] == rows[1:]
    assert sum(fetched) == len(data) and max(fetched) <= chunk


# ---------------------------------------------------------------------------------------------------------------------
# configuration errors name the problem and the fix


def test_missing_container(storage):
    client = ContainerClient.from_connection_string(storage.connection_string, "no-such-container")
    message = source_error(client, "CI/x")
    assert message == ("container 'no-such-container' not found in storage account devstoreaccount1; "
                       "check source.container or CI_EXPORT_STORAGE")


def test_missing_model_lists_the_folders_that_have_one(container):
    write_model(container, "CustomerInsights_ab/vip-customers", entity("E", ["CustomerId"]))
    write_model(container, "CustomerInsights_ab/churn-risk", entity("E", ["CustomerId"]))
    message = source_error(container, "CustomerInsights_ab/vip-customer")
    assert f"no model.json at {container.container_name}/CustomerInsights_ab/vip-customer/model.json" in message
    assert "check source.path" in message
    assert message.index("CustomerInsights_ab/vip-customers") < message.index("CustomerInsights_ab/churn-risk")
    # Elsewhere in the container, too.
    assert "CustomerInsights_ab/vip-customers" in source_error(container, "Wrong_instance/vip-customers")


def test_missing_model_in_an_empty_container_and_legacy_flat_files(container):
    put(container, "legacy/vip_VipSegment_20240101T000000.csv", "1,a@example.com\n")
    message = source_error(container, "legacy")
    assert "No model.json exists anywhere" in message
    assert "old flat naming" in message and "vip_VipSegment_20240101T000000.csv" in message


def test_model_that_is_not_json(container):
    put(container, "CI_10/x/model.json", '{"entities": [')
    message = source_error(container, "CI_10/x")
    assert f"{container.container_name}/CI_10/x/model.json is not valid JSON" in message
    assert "line 1 column" in message and "re-run" in message


def test_model_without_entities(container):
    put(container, "CI_10/y/model.json", '{"name": "cdm"}')
    assert "not a CDM model" in source_error(container, "CI_10/y")


def test_several_entities_need_source_entity(container):
    write_model(container, "CI_11/x", entity("Vip", ["CustomerId"]), entity("Churn", ["CustomerId"]))
    message = source_error(container, "CI_11/x")
    assert "several entities (Vip, Churn)" in message and "set source.entity" in message
    message = source_error(container, "CI_11/x", "Loyal")
    assert "entity 'Loyal' is not in" in message and "Vip, Churn" in message and "source.entity" in message


def test_no_partitions_and_no_timestamp_folder(container):
    write_model(container, "CI_12/x", entity("E", ["CustomerId"]))
    put(container, "CI_12/x/E/2026/03/01/0600/readme.txt", "no csv here")
    message = source_error(container, "CI_12/x")
    assert "lists no partitions for entity 'E'" in message and "yyyy/MM/dd/HHmm" in message
    assert f"{container.container_name}/CI_12/x/E/" in message and "retry after it finishes" in message


def test_partition_listed_but_missing(container):
    present, missing = "CI_13/x/E/2026/03/01/0600/E_1.csv", "CI_13/x/E/2026/03/01/0600/E_2.csv"
    put(container, present, "1\n")
    write_model(container, "CI_13/x", entity("E", ["CustomerId"], [blob_url(container, present),
                                                                    blob_url(container, missing)]))
    message = source_error(container, "CI_13/x")
    assert missing in message and present not in message
    assert "incomplete or still being written" in message and "re-run after" in message


def test_raw_row_shape():
    row = RawRow(["a"], "p.csv", 1, 1)
    assert (row.values, row.partition, row.record, row.line, row.error) == (["a"], "p.csv", 1, 1, "")
