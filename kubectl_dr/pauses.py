"""How long to pause between the looks of a wait: short first, then the wait's own period.

Most of what a run waits for here is done within a second or two (a pod started, a node's script wrote its
line, a new kubelet announced itself): a fixed period finds it half a period late on average, every time. The
pauses start at `first` and double up to `period`, which they then keep, so a long wait asks no more often than
before and the deadline of each wait is its own; only the first few looks come sooner. One pattern for every
polling loop that reads state (never for a wait whose pause is part of a safety check).
"""

from __future__ import annotations

from collections.abc import Iterator

FIRST = 0.1  # a look costs one request or one exec; a handful of them in the first second is nothing


def pauses(period: float, first: float = FIRST) -> Iterator[float]:
    """first, 2×first, 4×first … up to `period`, then `period` for good."""
    if not (first > 0 and period > 0):  # a zero pause would turn the wait into a busy loop against the API server
        raise ValueError(f"pauses need a positive first pause and period (got {first}, {period})")
    pause = min(first, period)
    while True:
        yield pause
        pause = min(pause * 2, period)
