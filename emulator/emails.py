"""ActiveCampaign's email rules as the emulator applies them."""
from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}"
)


def is_valid_email(email: str) -> bool:
    """AC-like syntax check: local@domain.tld in ASCII, no spaces, no empty dot-separated parts."""
    return len(email) <= 254 and _EMAIL.fullmatch(email) is not None and email.index("@") <= 64


def normalise_email(email: str) -> str:
    """AC matches emails case-insensitively and stores them lower-cased."""
    # Reuse the same string object when it is already lower-case: the log and the store then share it.
    return email if email.islower() else email.lower()
