"""The suite's one way to wait for something: poll a check until it holds, or fail saying what and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", *,
               interval: float = 0.3, explain: Callable[[], str] | None = None) -> Any:
    """Poll until check() returns a truthy value and return it; on timeout fail with the last value and,
    when given, explain() (the state of the cluster worth reading first, for instance)."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{detail}")
        time.sleep(interval)
