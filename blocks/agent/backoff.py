"""Reconnection delays: exponential, capped, with jitter so a fleet of agents does not reconnect
in step after an outage."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Jitter needs no cryptographic strength, but SystemRandom keeps the linter's rule simple.
_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnection attempt n (0-based): uniform in [d/2, d], d = min(cap, base*2^n)."""

    base: float = 0.5
    cap: float = 30.0

    def ceiling(self, attempt: int) -> float:
        # 2**attempt overflows a float long after it passes any cap; stop doubling at 64.
        return min(self.cap, self.base * 2 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        top = self.ceiling(attempt)
        return _RANDOM.uniform(top / 2, top)
