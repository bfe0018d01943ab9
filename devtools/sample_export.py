"""Write realistic Customer Insights segment exports (model.json + CSV partitions) into blob storage.

Used by the demo, the tests and the benchmark. Every row is a pure function of (seed, row index), so a later
export of the "same" segment (``changes``) shares unchanged rows exactly, and the returned bookkeeping says what a
correct exporter must send (``expected``) and reject (``rejected``).

    python -m devtools.sample_export --connection-string "$CI_EXPORT_STORAGE" --container exports --rows 100000
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

COLUMNS: list[tuple[str, str]] = [
    ("CustomerId", "string"),
    ("PrimaryEmail", "string"),
    ("FirstName", "string"),
    ("LastName", "string"),
    ("Phone", "string"),
    ("City", "string"),
    ("Country", "string"),
    ("PostalAddress", "string"),
    ("LoyaltyTier", "string"),
    ("LifetimeValue", "decimal"),
    ("CreatedOn", "dateTime"),
    ("Notes", "string"),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]
EMAIL = 1  # index of PrimaryEmail

# (display name, ASCII slug used in the email's local part)
FIRST_NAMES = [
    ("José", "jose"), ("Zoë", "zoe"), ("Øyvind", "oyvind"), ("李", "li"), ("Anna", "anna"), ("Mohammed", "mohammed"),
    ("Chloé", "chloe"), ("Jürgen", "jurgen"), ("Siobhán", "siobhan"), ("Kenji", "kenji"), ("Amélie", "amelie"),
    ("Łukasz", "lukasz"), ("Olivia", "olivia"), ("Noah", "noah"), ("Fatima", "fatima"), ("Björn", "bjorn"),
    ("Ana María", "anamaria"), ("Seán", "sean"), ("Priya", "priya"), ("Ngozi", "ngozi"),
]
LAST_NAMES = [
    ("García", "garcia"), ("Müller", "muller"), ("O'Brien", "obrien"), ("Nguyen", "nguyen"), ("Smith", "smith"),
    ("Østergaard", "ostergaard"), ("王", "wang"), ("Kowalski", "kowalski"), ("Dubois", "dubois"),
    ("van der Berg", "vanderberg"), ("Silva", "silva"), ("Yılmaz", "yilmaz"), ("Johansson", "johansson"),
    ("Smith, Jr.", "smithjr"), ("Rossi", "rossi"), ("Brown", "brown"), ("Đorđević", "djordjevic"),
]
CITIES = [
    ("Zürich", "Switzerland"), ("São Paulo", "Brazil"), ("Reykjavík", "Iceland"), ("New York", "United States"),
    ("Kraków", "Poland"), ("München", "Germany"), ("Tromsø", "Norway"), ("北京", "China"), ("Paris", "France"),
    ("Washington, D.C.", "United States"), ("Dublin", "Ireland"), ("Lagos", "Nigeria"), ("Osaka", "Japan"),
]
STREETS = ["Main St", "Rue de l'Église", "Hauptstraße", "Calle \"Mayor\"", "Storgata", "High Street", "Via Roma"]
TIERS = ["Bronze", "Silver", "Gold", "Platinum"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
NOTES = [
    "",
    "",
    "Prefers \"email\" only",
    "VIP since 2019, renewed twice",
    "Said: \"call me, not text\"\nFollow up in Q3",
    "Line one\r\nLine two, with comma",
    "Zoë's referral; 10% off",
]
STALE_DOMAIN = "stale.example.net"

# Rejected-row kinds, as exporter.mapping.Reason values.
MISSING_EMAIL = "missing_email"
INVALID_EMAIL = "invalid_email"
DUPLICATE_EMAIL = "duplicate_email"
MALFORMED_ROW = "malformed_row"

# Special rows repeat every `period` rows, at these offsets (all below the smallest period, 40).
_BAD_EMAILS = {7: "", 11: "   ", 17: "not-an-email", 23: "a@b", 29: "john@@example.com"}
_DUPLICATE_OFFSETS = {33: 20, 39: 20}  # offset -> copy the email of the row this many rows earlier
_MASK = (1 << 64) - 1
_DAYS = [f"{datetime(2019, 1, 1) + timedelta(days=d):%Y-%m-%d}" for d in range(5 * 365)]  # CreatedOn dates


@dataclass
class SampleExport:
    container: str
    path: str
    entity: str
    columns: list[str]
    partitions: list[str]  # blob names of the current export, in model order
    expected: Mapping[str, dict[str, str]]  # lowercased email -> column -> value as written, valid unique rows
    rejected: list[tuple[str, str]]  # (CustomerId, reason kind) in file order
    stale_emails: set[str]  # lowercased emails that exist only in the older timestamp folder
    total_rows: int  # data records in the current export (bad and broken ones included)
    folder: str  # the timestamp folder of the current export
    stale_partitions: list[str] = field(default_factory=list)
    model_url: str = ""


class ExpectedContacts(Mapping[str, dict[str, str]]):
    """Email -> expected column values, regenerated on access so that 1M rows cost a small int per email."""

    def __init__(self, generator: _RowGenerator) -> None:
        self._generator = generator
        self._rows: dict[str, int] = {}  # email -> row index * 2 + modified

    def _add(self, email: str, index: int, modified: bool) -> None:
        self._rows[email] = index * 2 + modified

    def __getitem__(self, email: str) -> dict[str, str]:
        packed = self._rows[email]
        return dict(zip(COLUMN_NAMES, self._generator.row(packed >> 1, bool(packed & 1))))

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class _RowGenerator:
    """Row i of an export is a pure function of (seed, i)."""

    def __init__(
        self, seed: int, period: int, *, bad_emails: bool = True, duplicates: bool = True,
        email_domain: str | None = None, id_offset: int = 0,
    ) -> None:
        self.seed = seed
        self.period = period
        self.bad_emails = bad_emails
        self.duplicates = duplicates
        self.email_domain = email_domain
        self.id_offset = id_offset
        self._seed_mix = (seed * 0xBF58476D1CE4E5B9) & _MASK
        # GUID-shaped and unique per row: the row number is the last group.
        self._id_prefix = (
            f"{(seed * 2654435761) & 0xFFFFFFFF:08x}-{seed >> 24 & 0xFFFF:04x}-4{seed >> 12 & 0xFFF:03x}-"
            f"8{seed & 0xFFF:03x}-"
        )

    def mix(self, i: int, salt: int = 0) -> int:
        h = ((i + 1 + salt * 0x632BE59BD9B4E5) * 0x9E3779B97F4A7C15 + self._seed_mix) & _MASK
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK
        return h ^ (h >> 29)

    def canonical_email(self, i: int) -> str:
        h = self.mix(i)
        first = FIRST_NAMES[h % len(FIRST_NAMES)][1]
        last = LAST_NAMES[(h >> 8) % len(LAST_NAMES)][1]
        domain = self.email_domain or DOMAINS[(h >> 16) % len(DOMAINS)]
        return f"{first}.{last}{i}@{domain}"

    def email(self, i: int) -> str:
        offset = i % self.period
        if offset in _BAD_EMAILS and self.bad_emails:
            return _BAD_EMAILS[offset]
        if offset in _DUPLICATE_OFFSETS and i >= _DUPLICATE_OFFSETS[offset] and self.duplicates:
            original = self.canonical_email(i - _DUPLICATE_OFFSETS[offset])
            return original.upper() if offset == 33 else f" {original.title()} "
        email = self.canonical_email(i)
        if i % 5 == 2:
            return email.title()  # mixed case: José.García12@Example.Com
        if i % 9 == 4:
            return f"  {email} "
        return email

    def row(self, i: int, modified: bool = False) -> list[str]:
        h = self.mix(i)
        first = FIRST_NAMES[h % len(FIRST_NAMES)][0]
        last_index = (h >> 8) % len(LAST_NAMES)
        city, country = CITIES[(h >> 20) % len(CITIES)]
        street = STREETS[(h >> 24) % len(STREETS)]
        number = (h >> 28) % 300 + 1
        address = f"{number} {street}, {city}" if h & (1 << 40) else f"{number} {street}\nApt {(h >> 41) % 40 + 1}"
        phone = f"+1 555 {(h >> 32) % 1000:03d} {i % 10000:04d}"
        tier = TIERS[(h >> 44) % len(TIERS)]
        if modified:  # a changed profile: married name, new phone, promoted tier
            last_index = (last_index + 1) % len(LAST_NAMES)
            phone = f"+44 20 {(h >> 32) % 10000:04d} {i % 10000:04d}"
            tier = TIERS[(TIERS.index(tier) + 1) % len(TIERS)]
        seconds = (h >> 34) % 86400
        created = f"{_DAYS[(h >> 17) % len(_DAYS)]}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
        return [
            self.customer_id(i),
            self.email(i),
            first,
            LAST_NAMES[last_index][0],
            phone,
            city,
            country,
            address,
            tier,
            f"{(h >> 48) % 2_000_000 / 100:.2f}",
            created,
            NOTES[(h >> 52) % len(NOTES)],
        ]

    def customer_id(self, i: int) -> str:
        return f"{self._id_prefix}{i + self.id_offset:012x}"


def write_sample_export(
    container_client: ContainerClient,
    *,
    path: str | None = None,
    entity: str = "VipCustomers",
    rows: int = 5000,
    partitions: int = 3,
    seed: int = 1,
    with_stale_folder: bool = True,
    bad_rows: bool = True,
    columns_header: bool = False,
    changes: dict[str, Any] | None = None,
    when: datetime | None = None,
) -> SampleExport:
    """Write model.json and ``partitions`` CSV files for ``rows`` rows (plus ``changes``); see the module doc.

    ``path`` defaults to ``CustomerInsights_<guid from seed>/vip-customers``. ``changes`` describes a later export of
    the same segment: ``{"modify": [indexes] | fraction, "drop": [indexes] | fraction, "add": n}``; pass a later
    ``when`` so it lands in a newer timestamp folder.
    """
    if rows < 0 or partitions < 1:
        raise ValueError("rows must be >= 0 and partitions >= 1")
    path = (path or default_path(seed)).strip("/")
    when = _minute(when or datetime.now(UTC))
    generator = _RowGenerator(seed, period=min(1000, max(40, rows // 5)), bad_emails=bad_rows)
    indexes, modified = _apply_changes(generator, rows, changes or {})
    broken = _broken_rows(rows) if bad_rows else {}

    folder = _timestamp_folder(path, entity, when)
    expected = ExpectedContacts(generator)
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    names: list[str] = []
    for number, chunk in enumerate(_split(indexes, partitions), start=1):
        records = []
        for i in chunk:
            values = generator.row(i, i in modified)
            if i in broken:
                values = broken[i](values)
            _account(values, i, i in modified, seen, expected, rejected)
            records.append(values)
        name = f"{folder}/{entity}_{number}.csv"
        _upload_csv(container_client, name, records, columns_header)
        names.append(name)

    stale_names, stale_emails = [], set()
    if with_stale_folder:
        stale_names, stale_emails = _write_stale_folder(
            container_client, path, entity, seed, min(max(rows, 10), 1000), partitions, when, columns_header
        )
    model_url = _write_model(container_client, path, entity, names, when, columns_header)
    return SampleExport(
        container=container_client.container_name,
        path=path,
        entity=entity,
        columns=list(COLUMN_NAMES),
        partitions=names,
        expected=expected,
        rejected=rejected,
        stale_emails=stale_emails,
        total_rows=len(indexes),
        folder=folder,
        stale_partitions=stale_names,
        model_url=model_url,
    )


def default_path(seed: int) -> str:
    instance = uuid.UUID(int=random.Random(seed).getrandbits(128), version=4)
    return f"CustomerInsights_{instance}/vip-customers"


def _minute(when: datetime) -> datetime:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def _timestamp_folder(path: str, entity: str, when: datetime) -> str:
    return f"{path}/{entity}/{when:%Y/%m/%d/%H%M}"


def _apply_changes(generator: _RowGenerator, rows: int, changes: dict[str, Any]) -> tuple[list[int], set[int]]:
    unknown = set(changes) - {"modify", "drop", "add"}
    if unknown:
        raise ValueError(f"unknown change kinds {sorted(unknown)}; use modify, drop, add")
    modified = _select(generator, rows, changes.get("modify"), salt=1)
    dropped = _select(generator, rows, changes.get("drop"), salt=2)
    added = int(changes.get("add") or 0)
    indexes = [i for i in range(rows) if i not in dropped] + list(range(rows, rows + added))
    return indexes, modified - dropped


def _select(generator: _RowGenerator, rows: int, how: Sequence[int] | float | None, salt: int) -> set[int]:
    """Row indexes given as a list, or a deterministic fraction of all rows."""
    if how is None:
        return set()
    if isinstance(how, float):
        threshold = int(how * 1_000_000)
        return {i for i in range(rows) if generator.mix(i, salt) % 1_000_000 < threshold}
    return {int(i) for i in how}


def _broken_rows(rows: int) -> dict[int, Any]:
    """Two rows with the wrong column count: one with an extra value, one cut short."""
    if rows < 10:
        return {}
    return {
        rows // 2 + 1: lambda values: values + ["unexpected, extra value"],
        rows - 2: lambda values: values[:5],
    }


def _account(
    values: list[str], i: int, modified: bool, seen: set[str], expected: ExpectedContacts,
    rejected: list[tuple[str, str]],
) -> None:
    """What a correct mapping stage makes of this row (first occurrence of an email wins)."""
    customer_id = values[0]
    if len(values) != len(COLUMN_NAMES):
        rejected.append((customer_id, MALFORMED_ROW))
        return
    email = values[EMAIL].strip()
    if not email:
        rejected.append((customer_id, MISSING_EMAIL))
    elif email in _BAD_EMAILS.values():
        rejected.append((customer_id, INVALID_EMAIL))
    elif email.lower() in seen:
        rejected.append((customer_id, DUPLICATE_EMAIL))
    else:
        seen.add(email.lower())
        expected._add(email.lower(), i, modified)


def _split(indexes: list[int], parts: int) -> Iterator[list[int]]:
    size, extra = divmod(len(indexes), parts)
    start = 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        yield indexes[start:end]
        start = end


def _upload_csv(container_client: ContainerClient, name: str, records: list[list[str]], header: bool) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(COLUMN_NAMES)
    writer.writerows(records)
    container_client.upload_blob(
        name,
        text.getvalue().encode("utf-8"),
        overwrite=True,
        max_concurrency=2,
        content_settings=ContentSettings(content_type="text/csv; charset=utf-8"),
    )


def _write_stale_folder(
    container_client: ContainerClient, path: str, entity: str, seed: int, rows: int, partitions: int,
    when: datetime, header: bool,
) -> tuple[list[str], set[str]]:
    """An older run's folder (same partition names) whose emails must never be exported."""
    generator = _RowGenerator(
        seed + 7919, period=1000, bad_emails=False, duplicates=False, email_domain=STALE_DOMAIN, id_offset=10**9
    )
    folder = _timestamp_folder(path, entity, when - timedelta(days=1))
    names, emails = [], set()
    for number, chunk in enumerate(_split(list(range(rows)), partitions), start=1):
        records = [generator.row(i) for i in chunk]
        emails.update(r[EMAIL].strip().lower() for r in records)
        name = f"{folder}/{entity}_{number}.csv"
        _upload_csv(container_client, name, records, header)
        names.append(name)
    return names, emails


def _write_model(
    container_client: ContainerClient, path: str, entity: str, partitions: list[str], when: datetime, header: bool
) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")
    format_settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": header,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    model = {
        "name": "cdm",
        "description": "cdm",
        "version": "1.0",
        "modifiedTime": stamp,
        "entities": [
            {
                "$type": "LocalEntity",
                "name": entity,
                "description": "",
                "annotations": [{"name": "Microsoft.CustomerInsights.Segment", "value": "true"}],
                "attributes": [{"name": name, "dataType": data_type} for name, data_type in COLUMNS],
                "partitions": [
                    {
                        "name": name.rsplit("/", 1)[-1].removesuffix(".csv"),
                        "location": f"{container_client.url}/{quote(name)}",
                        "refreshTime": stamp,
                        "fileFormatSettings": format_settings,
                    }
                    for name in partitions
                ],
            }
        ],
    }
    name = f"{path}/model.json"
    container_client.upload_blob(
        name,
        json.dumps(model, indent=2, ensure_ascii=False).encode("utf-8"),
        overwrite=True,
        content_settings=ContentSettings(content_type="application/json"),
    )
    return f"{container_client.url}/{quote(name)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a sample Customer Insights segment export to blob storage.")
    parser.add_argument("--connection-string", default=os.environ.get("CI_EXPORT_STORAGE"),
                        help="storage connection string (default: $CI_EXPORT_STORAGE)")
    parser.add_argument("--container", required=True)
    parser.add_argument("--path", default=None,
                        help="folder for model.json (default CustomerInsights_<guid>/vip-customers)")
    parser.add_argument("--entity", default="VipCustomers")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-stale-folder", action="store_true")
    parser.add_argument("--no-bad-rows", action="store_true")
    parser.add_argument("--header", action="store_true", help="write a header row (columnHeaders: true)")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error("--connection-string or CI_EXPORT_STORAGE is required")
    service = BlobServiceClient.from_connection_string(args.connection_string)
    container = service.get_container_client(args.container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    started = time.perf_counter()
    export = write_sample_export(
        container, path=args.path, entity=args.entity, rows=args.rows, partitions=args.partitions, seed=args.seed,
        with_stale_folder=not args.no_stale_folder, bad_rows=not args.no_bad_rows, columns_header=args.header,
    )
    elapsed = time.perf_counter() - started
    print(f"wrote {export.total_rows} rows in {len(export.partitions)} partitions to "
          f"{export.container}/{export.path} in {elapsed:.1f} s")
    print(f"  source.path: {export.path}   source.entity: {export.entity}")
    print(f"  valid unique emails: {len(export.expected)}, rejected rows: {len(export.rejected)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
