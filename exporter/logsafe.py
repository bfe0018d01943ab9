"""Keep secrets and personal data out of logs: API keys are redacted and emails masked in every record."""
from __future__ import annotations

import logging
import re
import threading
import unicodedata

# Matched on the text's ASCII shadow (see _AsciiShadow), so internationalised addresses (zoë.müller@example.com,
# user@bücher.example) are found as ASCII ones are. Group 1 is the first character of the local part, kept;
# group 2 the domain, kept.
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.(?:xn--[A-Za-z0-9-]+|[A-Za-z]{2,}))")
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


class _AsciiShadow(dict):
    """For ``str.translate``: each code point → one ASCII character of its kind, so indexes stay the same.

    ASCII stays itself; other letters and combining marks become ``a``, other digits ``0``, and everything else
    (punctuation such as « » “ ”, symbols, spaces such as U+00A0) a space, which no address contains.
    """

    def __missing__(self, codepoint: int) -> str:
        if codepoint < 128:
            shadow = chr(codepoint)
        else:
            kind = unicodedata.category(chr(codepoint))[0]
            shadow = "a" if kind in "LM" else "0" if kind == "N" else " "
        self[codepoint] = shadow
        return shadow


_ASCII_SHADOW = _AsciiShadow()


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    shadow = text if text.isascii() else text.translate(_ASCII_SHADOW)
    pieces: list[str] = []
    end = 0
    for match in _EMAIL.finditer(shadow):
        pieces += (text[end:match.start()], text[match.start(1)], "***@", text[match.start(2):match.end()])
        end = match.end()
    if not pieces:
        return text
    pieces.append(text[end:])
    return "".join(pieces)


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
