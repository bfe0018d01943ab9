"""Logs never carry the API key and show emails masked."""
from __future__ import annotations

import logging
import unicodedata

import pytest

from exporter import logsafe


def test_mask_email():
    assert logsafe.mask_email("jane.doe@example.com") == "j***@example.com"
    assert logsafe.mask_email("nonsense") == "***"


def test_records_are_scrubbed_for_any_logger(caplog):
    logsafe.install()
    logsafe.register_secret("sekret-api-key-123")
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("key %s for %s", "sekret-api-key-123", "Jane.Doe@Example.com")
        try:
            raise ValueError("boom sekret-api-key-123 john@example.org")
        except ValueError:
            logging.getLogger("exporter").exception("failed")
    text = caplog.text
    assert "sekret-api-key-123" not in text and "Jane.Doe@Example.com" not in text and "john@example.org" not in text
    assert "J***@Example.com" in text and "j***@example.org" in text


@pytest.mark.parametrize("text, masked", [
    ("zoë.müller@example.com", "z***@example.com"),
    ("user@bücher.example", "u***@bücher.example"),
    (unicodedata.normalize("NFD", "zoë.müller@example.com"), "z***@example.com"),  # combining diaeresis
    ("пользователь@пример.рф", "п***@пример.рф"),
    ("name@例え.テスト", "n***@例え.テスト"),
    ("user@example.xn--p1ai", "u***@example.xn--p1ai"),
    ("sent «Zoë@Bücher.example» and “jöhn@exämple.com”—done", "sent «Z***@Bücher.example» and “j***@exämple.com”—done"),
    ("zoë\u00a0müller@example.com", "zoë\u00a0m***@example.com"),  # a no-break space is not part of an address
    ("Jane.Doe@Example.com", "J***@Example.com"),
])
def test_internationalised_emails_are_masked_as_ascii_ones_are(text, masked):
    assert logsafe.scrub(text) == masked


@pytest.mark.parametrize("text", [
    "Größe@Maßstab", "ü@ü.ü", "a@b", "@bücher.example", "zoë@", "版本 1.2@3.4 完成", "straße @ münchen.de",
    "café ＠ example.com", "Преобразование завершено: 5 строк", "",
])
def test_text_that_is_not_an_email_is_left_alone(text):
    assert logsafe.scrub(text) == text


def test_internationalised_emails_are_masked_in_records(caplog):
    logsafe.install()
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("rejected %s and %s", "zoë.müller@example.com", "user@bücher.example")
    assert "zoë" not in caplog.text and "user@" not in caplog.text
    assert "z***@example.com" in caplog.text and "u***@bücher.example" in caplog.text
