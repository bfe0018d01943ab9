"""How long to wait after ActiveCampaign refuses a request: its ``Retry-After``, or our own backoff."""
from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import httpx

RATE_LIMIT_MESSAGE = "rate limit exceeded"
# The longest Retry-After a run waits out; a longer one stops the run (TransientError) and the next run resumes.
MAX_RETRY_AFTER_SECONDS = 900.0


def retry_after_seconds(response: httpx.Response, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for, in either form: seconds, or an HTTP date.

    A date is measured against the answer's own ``Date`` header when it has one (so the two clocks' skew does
    not matter), else against ``now`` (seconds since the epoch). None when the header is missing or unreadable.
    """
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = _http_date(value)
    if when is None:
        return None
    sent = _http_date(response.headers.get("date", ""))
    return max(0.0, when - (sent if sent is not None else now))


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def is_rate_limit_400(response: httpx.Response, data: dict) -> bool:
    """The bulk import API's own refusal for too many requests: HTTP 400 "Rate limit exceeded."."""
    return response.status_code == 400 and RATE_LIMIT_MESSAGE in str(data.get("message", "")).lower()


class Backoff:
    """Our own waits, for refusals without a Retry-After; they scale with the configured limits, so a
    time-scaled emulator gets time-scaled retries."""

    def __init__(self, requests_per_second: float) -> None:
        self.base = min(1.0, 2.0 / requests_per_second)
        self.most = 150.0 / requests_per_second

    def after(self, attempt: int) -> float:
        """Exponential with jitter, for faults and refusals that say nothing."""
        return min(self.most, self.base * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)

    def after_rate_limit(self, attempt: int, slot: float) -> float:
        """One pacer slot per attempt, doubling: the server's sliding minute drains as we wait."""
        return min(self.most, slot * (2 ** (attempt - 1))) * random.uniform(1.0, 1.25)
