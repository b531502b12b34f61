"""The parser's budget per exchange: a deadline that long loops check as they go.

Normalizing is pure CPU work on one exchange; a hostile one (a 50 MB event, a huge tool-call
argument) must not hold a worker for minutes. `within(seconds)` sets the deadline for the code
it wraps (a context variable, so concurrent exchanges each have their own); `check()` raises
`ParseBudgetExceeded` once it has passed. Callers check every few hundred events or per megabyte.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from shared.errors import ParseBudgetExceeded

__all__ = ["ParseBudgetExceeded", "check", "within"]


_deadline: ContextVar[tuple[float, Callable[[], float], float] | None] = ContextVar("parser_deadline", default=None)


@contextlib.contextmanager
def within(seconds: float, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    token = _deadline.set((clock() + seconds, clock, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check() -> None:
    current = _deadline.get()
    if current is not None:
        deadline, clock, seconds = current
        if clock() > deadline:
            raise ParseBudgetExceeded(f"the parser's budget of {seconds:g} s for one exchange ran out")
