"""The one retry helper of the Daytona backend: bounded tries, exponential backoff with jitter.

`RetryPolicy` says how many tries and how long between them; `Retries` counts the failures in a
row of one operation against it and waits between them. Both the requests (`Backend.call`) and
the log stream's reconnections (transport.py) retry through it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from codemode_jupyter.backends.daytona.errors import retry_after


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff for 429, 5xx, timeouts and lost connections."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    request_timeout: float = 30.0

    def delay(self, attempt: int, exc: BaseException) -> float:
        after = retry_after(exc)
        if after is not None:
            return min(after, self.max_backoff)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * random.uniform(0.5, 1.0)  # jitter, so parallel kernels do not march


class Retries:
    """The failures in a row of one operation, against a policy: `again` waits before the
    next try, or says there is none left."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def reset(self) -> None:
        """The operation made progress: only failures in a row count."""
        self.failures = 0

    async def again(self, exc: BaseException) -> bool:
        """Count a failure: wait the backoff and return True if a try is left, else False."""
        self.failures += 1
        if self.failures > self.policy.attempts:
            return False
        await asyncio.sleep(self.policy.delay(self.failures - 1, exc))
        return True
