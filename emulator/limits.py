"""Rate-limit windows and fault injection for the emulator."""
from __future__ import annotations

import bisect
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("429", "503", "500", "drop", "ratelimit400")
RETRY_AFTER_KINDS = ("429", "503")  # the faults answered with a Retry-After header


class SlidingWindow:
    """At most ``limit`` admissions in any ``seconds``-long window. Callers hold the account lock.

    Requests are timed when they arrive, but admitted in the order they get the account lock, so times can come
    slightly out of order: they are kept sorted and each is checked against the window that ends at it.
    """

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._times: list[float] = []

    def admit(self, now: float) -> float | None:
        """Record an admission and return None, or return how long until one would be admitted."""
        times = self._times
        horizon = now - self.seconds
        if times and times[0] <= horizon - self.seconds:  # long expired, whatever order the rest arrive in
            del times[:bisect.bisect_right(times, horizon - self.seconds)]
        first = bisect.bisect_right(times, horizon)
        if bisect.bisect_right(times, now) - first >= self.limit:
            return times[first] - horizon
        bisect.insort(times, now)
        return None

    def clear(self) -> None:
        self._times.clear()


class PeakCounter:
    """The most events seen in any ``seconds``-long window, to check a client's pacing with or without limits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.peak = 0
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        times = self._times
        times.append(now)
        horizon = now - self.seconds
        while times[0] <= horizon:
            times.popleft()
        self.peak = max(self.peak, len(times))


@dataclass
class _Rates:
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_500: float = 0.0
    rate_drop: float = 0.0
    paths: tuple[str, ...] | None = None  # None: every /api/3 route

    def pick(self, draw: float) -> str | None:
        for kind, rate in (("429", self.rate_429), ("503", self.rate_503), ("500", self.rate_500),
                           ("drop", self.rate_drop)):
            if draw < rate:
                return kind
            draw -= rate
        return None


@dataclass(frozen=True)
class Fault:
    """A fault to answer with. ``retry_after`` (real seconds; whole seconds, rounded up, at time_scale 1, as AC
    sends them) replaces the default Retry-After of one time-scaled second."""

    kind: str
    path: str | None = None
    retry_after: float | None = None


@dataclass
class Faults:
    """Answers chosen API requests with a fault instead of processing them (no side effects).

    ``set`` makes faults random (seeded); ``script`` queues faults for the next matching requests, in order,
    and takes precedence. Paths match when the given text occurs in the request path (``"bulk_import"``).
    Scripted 429 and 503 faults may name their own Retry-After (``retry_after``, in seconds as sent).
    """

    seed: int = 0
    _rates: _Rates = field(default_factory=_Rates)
    _script: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def set(self, rate_429: float = 0.0, rate_503: float = 0.0, rate_500: float = 0.0, rate_drop: float = 0.0,
            paths: Iterable[str] | None = None) -> None:
        rates = _Rates(rate_429, rate_503, rate_500, rate_drop, None if paths is None else _paths(paths))
        if min(rate_429, rate_503, rate_500, rate_drop) < 0 or rate_429 + rate_503 + rate_500 + rate_drop > 1:
            raise ValueError("fault rates must be >= 0 and add up to at most 1")
        with self._lock:
            self._rates = rates

    def script(self, kinds: Iterable[str], path: str | None = None, retry_after: float | None = None) -> None:
        kinds = [str(kind) for kind in kinds]
        unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; use {list(FAULT_KINDS)}")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or not retry_after > 0:
                raise ValueError(f"retry_after must be a number of seconds > 0, got {retry_after!r}")
            without = sorted({kind for kind in kinds if kind not in RETRY_AFTER_KINDS})
            if without:
                raise ValueError(f"only {list(RETRY_AFTER_KINDS)} answer with Retry-After, not {without}")
            retry_after = float(retry_after)
        with self._lock:
            self._script.extend(Fault(kind, path, retry_after) for kind in kinds)

    def clear(self) -> None:
        with self._lock:
            self._rates = _Rates()
            self._script.clear()

    def draw(self, path: str) -> Fault | None:
        """The fault for this request, or None to process it normally."""
        with self._lock:
            for i, scripted in enumerate(self._script):
                if scripted.path is None or scripted.path in path:
                    del self._script[i]
                    return scripted
            rates = self._rates
            if rates.paths is not None and not any(p in path for p in rates.paths):
                return None
            if not (rates.rate_429 or rates.rate_503 or rates.rate_500 or rates.rate_drop):
                return None
            kind = rates.pick(self._random.random())
            return None if kind is None else Fault(kind)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            rates = self._rates
            return {"rate_429": rates.rate_429, "rate_503": rates.rate_503, "rate_500": rates.rate_500,
                    "rate_drop": rates.rate_drop, "paths": None if rates.paths is None else list(rates.paths),
                    "script": [{"kind": s.kind, "path": s.path, "retry_after": s.retry_after} for s in self._script]}


def _paths(paths: Iterable[str]) -> tuple[str, ...]:
    if isinstance(paths, str):
        return (paths,)
    return tuple(paths)
