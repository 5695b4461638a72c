"""A slow link for exec streams (`up --link-mbit N`, test-only): each direction gets N Mbit/s of its own.

A token bucket per direction, as a full-duplex link of that speed has: the bytes of every frame (the
channel byte included) wait for their share of the rate before they are written or handed to the
process. The bucket holds at most 20 ms of traffic, so a stream cannot save up idle time
and burst past the rate; the process and the client see back-pressure exactly as on a slow network,
through the same drains that bound memory.
"""

from __future__ import annotations

import asyncio
import time

BURST_SECONDS = 0.02


class Bucket:
    """`take(n)` returns once `n` bytes fit in the rate: the caller then moves them."""

    def __init__(self, mbit: float) -> None:
        if mbit <= 0:
            raise ValueError("a link's rate must be positive")
        self.rate = mbit * 1_000_000 / 8  # bytes per second
        self.burst = self.rate * BURST_SECONDS
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()  # stdout and stderr share the direction out

    async def take(self, size: int) -> None:
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= size  # may go negative: a frame larger than the burst waits for all of it
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


class Link:
    """Both directions of one exec stream; `None` rate means unlimited (no waits at all)."""

    def __init__(self, mbit: float | None) -> None:
        self.down = Bucket(mbit) if mbit else None  # pod → client
        self.up = Bucket(mbit) if mbit else None  # client → pod

    async def send(self, size: int) -> None:
        if self.down is not None:
            await self.down.take(size)

    async def receive(self, size: int) -> None:
        if self.up is not None:
            await self.up.take(size)
