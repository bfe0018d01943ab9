"""Keep secrets and personal data out of logs: API keys are redacted and emails masked in every record."""
from __future__ import annotations

import logging
import re
import threading

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return _EMAIL.sub(r"\1***@\2", text)


def register_secret(value: str) -> None:
    """Redact ``value`` from every log record from now on."""
    if value:
        with _lock:
            _secrets.add(value)


def install() -> None:
    """Scrub every log record at creation, whichever logger or handler it goes to (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string (of any kind): logging reports it itself
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(scrubbed_record)
