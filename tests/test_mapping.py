"""Mapping rows to contacts: email rules, duplicates, broken rows, missing columns."""
from __future__ import annotations

import orjson
import pytest
from email_validator import EmailNotValidError, validate_email

from exporter.errors import SourceError
from exporter.mapping import Contact, Mapper, Reason, Rejection, check_email, email_key
from exporter.run.diff import fingerprints
from exporter.settings import Mapping

COLUMNS = ["CustomerId", "PrimaryEmail", "FirstName", "LastName", "Phone", "City"]


def mapper(**mapping) -> Mapper:
    config = {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "phone": "Phone"}
    config.update(mapping)
    return Mapper(Mapping.model_validate(config), COLUMNS, list_id=3)


def test_maps_values_trims_and_lowercases_email():
    contact = mapper(fields={"7": "City"}, tags=["ci-vip"]).map_row(
        ["c1", "  Jane.Doe@Example.COM ", "Jane", "Doe", "", "Oslo, Norway"])
    assert isinstance(contact, Contact)
    assert contact.email == "jane.doe@example.com"
    assert contact.payload == {"email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe",
                               "fields": [{"id": 7, "value": "Oslo, Norway"}], "tags": ["ci-vip"],
                               "subscribe": [{"listid": 3}]}
    assert "phone" not in contact.payload  # empty optional values are not sent
    assert contact.key == email_key("jane.doe@example.com")


@pytest.mark.parametrize("first, city", [
    ("Zoë \"Z\" O'Neil", "Line1\nLine2\ttab \\ back"), ("李", "\u2028 \x00 \x1f"), ("", ""), ("  ", "emoji 🎉"),
])
def test_encoded_contact_is_exactly_what_encoding_the_payload_gives(first, city):
    """Fingerprints are digests of these bytes: the fast encoder must match orjson.dumps of the payload."""
    m = mapper(fields={"7": "City", "9": "Phone"}, tags=["ci-vip", "q\"uote"])
    contact = m.map_row(["c1", "a@example.com", first, "Doe", "+1 555", city])
    payload = {"email": "a@example.com"}
    if first.strip():
        payload["first_name"] = first.strip()
    payload.update({"last_name": "Doe", "phone": "+1 555",
                    "fields": [{"id": 7, "value": city}, {"id": 9, "value": "+1 555"}], "tags": ["ci-vip", "q\"uote"],
                    "subscribe": [{"listid": 3}]})
    assert contact.encoded == orjson.dumps(payload)


@pytest.mark.parametrize("account", ["Contoso Ltd", " Zoë \"Z\" & Co \n", "", "   "])
def test_account_is_sent_as_customer_acct_name_exactly_as_encoding_the_payload_gives(account):
    m = mapper(account="City", fields={"7": "City"}, tags=["ci-vip"])
    contact = m.map_row(["c1", "a@example.com", "Jane", "", "+1 555", account])
    payload = {"email": "a@example.com", "first_name": "Jane", "phone": "+1 555"}
    if account.strip():
        payload["customer_acct_name"] = account.strip()
    payload.update({"fields": [{"id": 7, "value": account}], "tags": ["ci-vip"], "subscribe": [{"listid": 3}]})
    assert contact.encoded == orjson.dumps(payload)
    assert ("customer_acct_name" in contact.payload) == bool(account.strip())  # empty values are not sent


def test_account_column_must_be_in_model_json():
    with pytest.raises(SourceError) as info:
        mapper(account="Company")
    assert "account → 'Company'" in str(info.value)


def test_contact_without_fields_or_tags_encodes_as_the_payload():
    contact = mapper().map_row(["c1", "a@example.com", "", "", "", ""])
    assert contact.encoded == orjson.dumps({"email": "a@example.com", "subscribe": [{"listid": 3}]})


def test_emails_differing_only_in_case_get_the_same_key():
    m = mapper()
    first = m.map_row(["c1", "a@example.com", "", "", "", ""])
    second = m.map_row(["c2", " A@Example.com", "", "", "", ""])
    assert isinstance(first, Contact) and isinstance(second, Contact) and first.key == second.key
    second.origin = ("part_1.csv", 2, 3)
    dup = Mapper.duplicate(second)
    assert dup.reason is Reason.DUPLICATE_EMAIL and dup.customer_id == "c2"
    assert dup.where == "part_1.csv record 2 (line 3)"


@pytest.mark.parametrize("email, reason", [
    ("", Reason.MISSING_EMAIL), ("   ", Reason.MISSING_EMAIL), ("not-an-email", Reason.INVALID_EMAIL),
    ("a@b", Reason.INVALID_EMAIL), ("john@@example.com", Reason.INVALID_EMAIL), ("a..b@example.com", Reason.INVALID_EMAIL),
    ("jöhn@example.com", Reason.INVALID_EMAIL), ("x@host.test", Reason.INVALID_EMAIL),
])
def test_bad_emails_are_rejected_with_reason(email, reason):
    result = mapper().map_row(["c9", email, "", "", "", ""])
    assert isinstance(result, Rejection) and result.reason is reason and result.customer_id == "c9"
    assert result.detail


def test_row_with_wrong_column_count_is_rejected_not_dropped():
    result = mapper().map_row(["c1", "a@example.com", "x"], "p.csv#5")
    assert isinstance(result, Rejection) and result.reason is Reason.MALFORMED_ROW
    assert "expected 6 columns" in result.detail and result.where == "p.csv#5"


def test_mapped_column_missing_from_model_lists_available_columns():
    with pytest.raises(SourceError) as info:
        mapper(fields={"7": "Town"}, firstName="GivenName")
    message = str(info.value)
    assert "'Town'" in message and "'GivenName'" in message and "Available columns: CustomerId, PrimaryEmail" in message


def test_column_names_match_case_insensitively():
    contact = Mapper(Mapping.model_validate({"email": "primaryemail"}), COLUMNS, 1).map_row(
        ["c1", "a@example.com", "", "", "", ""])
    assert isinstance(contact, Contact)


@pytest.mark.parametrize("email", [
    "a@example.com", "first.last+tag@sub.example.org", "x_y-z@a-b.example.co", "a@b.cd", "1@2.example.io",
    "a-@example.com", "_@example.com", "a@xn--bcher-kva.example", "a@ab--cd.com", "a@x.local",
    "a" * 64 + "@example.com", "a" * 65 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a@example.c0m", "a.@example.com", ".a@example.com", "a@-example.com", "a@example-.com",
])
def test_fast_path_never_accepts_what_email_validator_refuses(email):
    try:
        validate_email(email, check_deliverability=False, allow_smtputf8=False)
        valid = True
    except EmailNotValidError:
        valid = False
    assert (check_email(email) is None) == valid


def test_keys_and_fingerprints_stay_what_saved_sync_states_hold():
    # Saved sync states hold these numbers: if they changed, every contact would be sent again once.
    assert email_key("jane.doe@example.com") == 11427673760006558409
    contacts = [Contact(1, "a@example.com", "c1", b'{"email":"a@example.com"}'),
                Contact(2, "b@example.com", "c2", b'{"email":"b@example.com"}')]
    assert fingerprints(contacts).tolist() == [11120794167634703400, 1748383297933722526]
