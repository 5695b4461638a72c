"""Where the in-process control-plane components run, as the kubelets' static pods say.

kubeadm runs kube-apiserver, kube-controller-manager and kube-scheduler as static pods; here they are parts
of the server process, and each control-plane kubelet reports whether it "runs" them (its manifest is in
the node's manifests directory). The serve loop serves the API while at least one node runs
kube-apiserver (a load balancer in front of the API servers: no backend, connection refused), and runs the
controllers and the scheduler while one node runs them and the API serves.

`api` is the gate every in-process client of the API (kubelets, controllers) passes: closed, their calls
fail as calls to an unreachable API server fail, and their watches end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
COMPONENTS = (APISERVER, CONTROLLER_MANAGER, SCHEDULER)


class Gate:
    """Open while the API serves; waiters wake on every change."""

    def __init__(self) -> None:
        self._open = False
        self._changed = asyncio.Condition()
        self.generation = 0  # bumped on every open: a client can tell the API "restarted" meanwhile

    @property
    def is_open(self) -> bool:
        return self._open

    async def set(self, open_: bool) -> None:
        async with self._changed:
            if open_ == self._open:
                return
            self._open = open_
            if open_:
                self.generation += 1
            self._changed.notify_all()

    async def wait_open(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._open)

    async def wait_closed(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._open)


class Hub:
    def __init__(self) -> None:
        self.running: dict[str, set[str]] = {c: set() for c in COMPONENTS}
        self.changed = asyncio.Event()
        self.api = Gate()

    def report(self, component: str, node: str, running: bool) -> None:
        nodes = self.running[component]
        before = node in nodes
        if running:
            nodes.add(node)
        else:
            nodes.discard(node)
        if before != running:
            self.changed.set()

    def runs(self, component: str) -> bool:
        return bool(self.running[component])

    def nodes(self, component: str) -> Iterable[str]:
        return sorted(self.running[component])
