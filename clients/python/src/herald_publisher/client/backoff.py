"""Reconnect delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Backoff:
    """The delay before reconnect attempt ``n`` (1-based) is drawn uniformly from
    ``[0, min(max_delay, initial_delay * multiplier ** (n - 1))]`` ("full jitter"), so that many
    clients cut off at once do not come back at once.

    Attributes:
        initial_delay: Seconds; the window of the first attempt.
        max_delay: Seconds; the largest window.
        multiplier: How fast the window grows.
        jitter: False draws no random part: the delay is the window itself.
    """

    initial_delay: float = 0.5
    max_delay: float = 20.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("backoff delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("the backoff multiplier must be at least 1")

    def window(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (1-based)."""
        exponent = max(0, attempt - 1)
        # Past ~60 doublings the window is max_delay anyway; stop before floats overflow.
        if exponent > 60:
            return self.max_delay
        return min(self.max_delay, self.initial_delay * self.multiplier**exponent)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before ``attempt`` (1-based)."""
        window = self.window(attempt)
        return rand() * window if self.jitter else window
