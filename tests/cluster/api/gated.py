"""A Store seen through the API server: usable only while the API serves (see control/hub.py).

Kubelets and controllers call the Store in-process; through this wrapper they see what a real component
sees of an API server that is down: every call fails at once (connection refused), and a watch that was
open ends when the API server goes away, so the caller relists once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.cluster.control.hub import Gate


class ApiUnavailable(ConnectionRefusedError):
    """The API server does not answer (no kube-apiserver static pod runs)."""

    code = None

    def __init__(self) -> None:
        super().__init__(111, "connect: connection refused")


class GatedStore:
    def __init__(self, store: Any, gate: Gate) -> None:
        self._store = store
        self._gate = gate

    @property
    def registry(self) -> Any:
        return self._store.registry

    def resource(self, resource: str) -> Any:
        return self._store.resource(resource)

    def _check(self) -> None:
        if not self._gate.is_open:
            raise ApiUnavailable()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            return await attr(*args, **kwargs)

        return call

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[tuple[str, Any]]:
        self._check()
        events = self._store.watch(*args, **kwargs)
        closed = asyncio.ensure_future(self._gate.wait_closed())
        try:
            while True:
                nxt = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    raise ApiUnavailable()
                try:
                    yield nxt.result()
                except StopAsyncIteration:
                    return
        finally:
            closed.cancel()
            with contextlib.suppress(Exception):
                await events.aclose()
