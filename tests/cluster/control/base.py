"""A level-triggered controller loop: any watch event (or the resync period) reconciles everything.

Reconciling the whole (small) cluster after each burst of events is simpler and more robust than
per-object work queues, and costs nothing measurable at the loopback cluster's scale. Events are
debounced so a burst of pod status updates causes one pass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.layout import Layout

log = logging.getLogger("tests.cluster.control")


class Controller:
    name = "controller"
    watches: tuple[str, ...] = ()
    resync_seconds = 5.0
    debounce_seconds = 0.05

    def __init__(self, store: Any, layout: Layout) -> None:
        self.store = store
        self.layout = layout
        self._wake = asyncio.Event()

    async def reconcile(self) -> None:
        raise NotImplementedError

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        watchers = [asyncio.create_task(self._watch(r)) for r in self.watches]
        try:
            while True:
                self._wake.clear()
                try:
                    await self.reconcile()
                except asyncio.CancelledError:
                    raise
                except ApiError as exc:
                    # Conflicts, objects deleted meanwhile, namespaces terminating: expected races.
                    log.info("%s: %s; retrying", self.name, exc.message)
                except Exception:
                    # A failed pass (a 409 from a concurrent writer, etcd briefly unavailable) is
                    # retried on the next event or resync, as real controllers requeue.
                    log.exception("%s: reconcile failed", self.name)
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event
                # is set, and a controller being stopped would run on.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter}, timeout=self.resync_seconds)
                finally:
                    waiter.cancel()
                await asyncio.sleep(self.debounce_seconds)
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _watch(self, resource: str) -> None:
        while True:
            try:
                async for _event in self.store.watch(resource):
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("%s: watch on %s ended; restarting", self.name, resource, exc_info=True)
            await asyncio.sleep(0.5)
            self._wake.set()
