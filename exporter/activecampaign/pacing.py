"""Request pacing: keeps one account's requests under ActiveCampaign's limits, shared by every thread.

ActiveCampaign limits an account as a whole (all keys and clients together): 5 requests a second, and 100
multi-contact bulk imports a minute. Every request passes the general pacer; bulk imports and import polls
also pass their own. A refusal holds a pacer back for everyone (``hold_off``), including threads that had
already reserved a slot.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from ..settings import RateLimits

# Headroom under the account's sliding windows, so that jitter between our start times and the server's arrival
# times never pushes a request over a limit. The bulk limit sets the run's pace, so its margin is thin (98 of
# 100 a minute leaves two requests' time for jitter); the general limit has spare room, so it gets a wide one.
BULK_PACING_MARGIN = 0.98
GENERAL_PACING_MARGIN = 0.85
# Import polls may use this share of what bulk imports leave of the general limit: bulk imports come first.
POLL_SHARE = 0.8

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Pacer:
    """Spaces request starts at ``rate_per_second``, shared by all threads.

    Spacing alone lets requests bunch up when the process is starved of CPU (threads that slept until their
    slot all wake late together), so actual start times are also held to sliding windows:
    - a short one (≥ 4 intervals, ≥ 0.25 s) allowing ``rate × window`` starts, so late threads never start
      together;
    - optionally ``window_limit`` starts in any ``window_seconds`` (the server's own window), so requests that
      were held up cannot catch up faster than the server allows: a stall costs its time once instead of
      turning into refusals.
    """

    def __init__(self, rate_per_second: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep,
                 window_limit: int | None = None, window_seconds: float | None = None) -> None:
        self.interval = 1.0 / rate_per_second
        # A whole number of intervals, so the window allows exactly ``rate`` and costs nothing when starts are
        # evenly spaced.
        short_limit = max(4, math.ceil(0.25 * rate_per_second))
        self._windows: list[tuple[int, float, deque[float]]] = [(short_limit, short_limit * self.interval, deque())]
        if window_limit and window_seconds:
            self._windows.append((window_limit, window_seconds, deque()))
        self._next = 0.0  # the next free slot
        self._held_until = 0.0  # no start before this (a refusal's wait)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        """Wait for this thread's turn to start a request."""
        with self._lock:  # reserve a slot: each thread sleeps once, no herd waking at every interval
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        held_by_server_window = False
        while True:  # re-checked after the sleep: a hold may have come meanwhile, and late threads must not bunch
            with self._lock:
                now = self._clock()
                window_waits = [self._window_wait(limit, seconds, starts, now)
                                for limit, seconds, starts in self._windows]
                wait = max(self._held_until - now, *window_waits)
                if wait <= 0:
                    for _, _, starts in self._windows:
                        starts.append(now)
                    if held_by_server_window:  # slots reserved meanwhile are behind us: space the next from here
                        self._next = max(self._next, now + self.interval)
                    return
            held_by_server_window = held_by_server_window or (len(window_waits) > 1 and window_waits[1] > 0)
            self._sleep(wait)

    @staticmethod
    def _window_wait(limit: int, seconds: float, starts: deque[float], now: float) -> float:
        while starts and starts[0] <= now - seconds:
            starts.popleft()
        return starts[0] + seconds - now if len(starts) >= limit else 0.0

    def hold_off(self, seconds: float) -> None:
        """No request may start for ``seconds`` from now, whoever asks and whenever it reserved its slot."""
        with self._lock:
            until = self._clock() + seconds
            self._held_until = max(self._held_until, until)
            self._next = max(self._next, until)


class AccountPacers:
    """The pacers of one ActiveCampaign account at its configured limits."""

    def __init__(self, limits: RateLimits, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        general = limits.requests_per_second * GENERAL_PACING_MARGIN
        bulk = limits.bulk_imports_per_minute / 60.0 * BULK_PACING_MARGIN
        # The server counts 5 requests in a second and 100 bulk imports in a minute; at the configured limits
        # those windows last 5 and 100 requests' worth of time (tests use time-scaled limits).
        self.general = Pacer(general, clock=clock, sleep=sleep, window_limit=math.floor(5 * GENERAL_PACING_MARGIN),
                             window_seconds=5 / limits.requests_per_second)
        self.bulk = Pacer(bulk, clock=clock, sleep=sleep, window_limit=math.floor(100 * BULK_PACING_MARGIN),
                          window_seconds=100 * 60.0 / limits.bulk_imports_per_minute)
        self.polls = Pacer(max(general - bulk, general * 0.2) * POLL_SHARE, clock=clock, sleep=sleep)
