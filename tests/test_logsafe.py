"""Logs never carry the API key and show emails masked."""
from __future__ import annotations

import logging

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
