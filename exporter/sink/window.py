"""How many bulk requests may be in flight at once."""
from __future__ import annotations

import math
from collections import deque


class InFlightWindow:
    """Enough requests in flight to keep ``rate`` going at the server's latency (Little's law), and no more:
    extra requests only queue up in the server and cost CPU here.

    The latency is the lowest of the recent ones, not their average: time spent queued (in the server, in the
    pacer, or here waiting for the CPU) grows with the number in flight, and sizing the window from it would
    feed on itself. A server that really slows down raises every recent latency, so the window follows.
    """

    # Above this rate the server sets no pace worth sizing for (an emulator without limits), and a fixed
    # number in flight is used: enough that the reader never waits on one answer, few enough that requests do
    # not just queue up in the server.
    MAX_RATE = 100.0
    UNPACED = 8
    RECENT = 32

    def __init__(self, rate_per_second: float, maximum: int, initial_latency: float = 0.5) -> None:
        self._rate = rate_per_second
        self._maximum = maximum
        self._recent: deque[float] = deque([initial_latency], maxlen=self.RECENT)
        self.limit = self._compute()

    def observe(self, seconds: float) -> None:
        """One request's latency, from hand-over to answer."""
        self._recent.append(seconds)
        self.limit = self._compute()

    def _compute(self) -> int:
        if self._rate > self.MAX_RATE:
            return min(self._maximum, self.UNPACED)
        return max(2, min(self._maximum, math.ceil(self._rate * min(self._recent) * 1.5) + 1))
