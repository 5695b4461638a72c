"""The loopback cluster's server process (`python -m tests.cluster.serve --dir DIR`, started by `up`): the
kubelets of every node, and — as the kubelets' static pods say (control/hub.py) — the API server, the
controllers and the scheduler, all in one asyncio loop.

Start-up is kubeadm's order of things without kubeadm: the kubelets start first and run their static pods
(etcd members, and the components the other manifests stand for); the API server serves once some node runs
kube-apiserver and etcd answers; the controllers and the scheduler run while the API serves and some node
runs their manifest. Moving a manifest out of every node stops that part; moving it back starts a fresh one
(new connections, nothing remembered), as a restarted process would.

Everything it needs comes from DIR/state.json, written by `up`. SIGTERM or SIGINT stop it cleanly: the API
stops accepting requests, the loops are cancelled, and the pod processes end with it (they run with
--die-with-parent; etcd gets a short grace period to stop cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tests.cluster import etcd_versions
from tests.cluster.api.bootstrap import bootstrap
from tests.cluster.api.config import ApiConfig
from tests.cluster.api.crds import serve_stored as serve_stored_crds
from tests.cluster.api.gated import GatedStore
from tests.cluster.api.server import RunningServer, serve
from tests.cluster.api.store import Store
from tests.cluster.control import etcd_members as em
from tests.cluster.control.cronjob import CLOCK_ORIGIN_OPTION, CronJobController
from tests.cluster.control.daemonset import DaemonSetController
from tests.cluster.control.deployment import DeploymentController
from tests.cluster.control.endpoints import EndpointsController, EndpointSliceController
from tests.cluster.control.external_etcd import ExternalEtcd
from tests.cluster.control.garbage_collector import GarbageCollector
from tests.cluster.control.hub import APISERVER, CONTROLLER_MANAGER, SCHEDULER, Hub
from tests.cluster.control.job import JobController
from tests.cluster.control.layout import Layout
from tests.cluster.control.namespaces import NamespaceController
from tests.cluster.control.provisioner import VolumeController, ensure_default_class
from tests.cluster.control.replicaset import ReplicaSetController
from tests.cluster.control.scheduler import Scheduler
from tests.cluster.control.serviceaccounts import ServiceAccountsController
from tests.cluster.control.statefulset import StatefulSetController
from tests.cluster.node import runtime as node_runtime
from tests.cluster.node.host_init import HostInit
from tests.cluster.node.streaming import NodeStreams

log = logging.getLogger("tests.cluster.serve")
ETCD_HEALTH_KEY = "/registry/health"


class Runnable(Protocol):
    async def run(self) -> None: ...


def open_store(layout: Layout, members: list[em.Member], api_dir: Path) -> Store:
    pki = layout.pki
    return Store.open([m.client_url for m in members], api_dir / "discovery",
                      ca_file=pki / "etcd-ca.crt", cert_file=pki / "apiserver-etcd-client.crt",
                      key_file=pki / "apiserver-etcd-client.key")


class Component:
    """A group of loops started fresh each time and cancelled as a whole (a process, in a real cluster)."""

    def __init__(self, name: str, make: Callable[[], list[Runnable]]) -> None:
        self.name = name
        self.make = make
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self.tasks)

    def start(self) -> None:
        log.info("%s: starting", self.name)
        self.tasks = [asyncio.create_task(loop.run(), name=f"{self.name}/{type(loop).__name__}")
                      for loop in self.make()]

    async def stop(self) -> None:
        log.info("%s: stopping", self.name)
        tasks, self.tasks = self.tasks, []
        while not all(t.done() for t in tasks):
            for t in tasks:
                t.cancel()  # again if a loop swallowed it
            await asyncio.wait(tasks, timeout=0.5)
        await asyncio.gather(*tasks, return_exceptions=True)


class ApiServer:
    """The API server: started on a fresh Store once etcd answers, stopped by closing its port."""

    def __init__(self, config: ApiConfig, layout: Layout, members: list[em.Member], streams: NodeStreams) -> None:
        self.config, self.layout, self.members, self.streams = config, layout, members, streams
        self.server: RunningServer | None = None
        self.store: Store | None = None
        self._classes_done = False

    @property
    def running(self) -> bool:
        return self.server is not None

    async def start(self) -> bool:
        """Try once to start; False when etcd does not answer yet (a real kube-apiserver exits and is
        restarted by its kubelet until it can reach its storage)."""
        store = open_store(self.layout, self.members, self.config.resolved_api_dir)
        try:
            await asyncio.wait_for(store.etcd.get(ETCD_HEALTH_KEY), 3.0)
            await bootstrap(store, api_port=self.config.port)  # the port is fixed in state.json before start
            await serve_stored_crds(store)  # the custom resources of the definitions etcd holds now
            if not self._classes_done:
                await ensure_default_class(store)  # an add-on, created once (kind ships local-path likewise)
                self._classes_done = True
            server = await serve(self.config, store, self.streams)
        except Exception as e:
            log.info("kube-apiserver: cannot start yet: %r", e)
            await store.close()
            return False
        self.store, self.server = store, server
        log.info("kube-apiserver: serving on https://127.0.0.1:%s", server.port)
        return True

    async def stop(self) -> None:
        server, store, self.server, self.store = self.server, self.store, None, None
        if server is not None:
            await server.stop()
        if store is not None:
            await store.close()
        log.info("kube-apiserver: stopped")


async def run(layout: Layout) -> None:
    state: dict[str, Any] = layout.read_state()
    members = em.members_from_state(state["etcd"]["members"])
    cps, workers = state["nodes"]["control_planes"], state["nodes"]["workers"]
    options = state.get("options", {})
    pki = layout.pki
    config = ApiConfig(
        cert_file=pki / "apiserver.crt", key_file=pki / "apiserver.key", client_ca_file=pki / "ca.crt",
        tokens_file=pki / "tokens.csv", rbac_policy_file=layout.rbac_policy, port=int(state["server"]["port"]),
    )
    hub = Hub()
    # The in-process clients' own connection to the API (kubelets, controllers), usable only through the gate.
    client_store = open_store(layout, members, config.resolved_api_dir)
    gated = GatedStore(client_store, hub.api)
    node_side = node_runtime.build(gated, layout, [*cps, *workers], options, hub=hub, control_planes=cps)
    external: ExternalEtcd | None = None
    external_task: asyncio.Task[None] | None = None
    if options.get("external_etcd"):
        external = ExternalEtcd(layout, members, etcd_versions.VERSIONS[options.get("etcd_version", "3.4")])
        await external.sync()
        external_task = asyncio.create_task(external.run(), name="external-etcd")
    kubelets = [asyncio.create_task(k.run(), name=f"kubelet/{k.node_name}") for k in node_side.kubelets]
    # Each node's init: `chroot /host systemctl restart kubelet` from a privileged pod (node/host_init.py).
    inits = [asyncio.create_task(HostInit(layout.node(k.node_name), k).run(), name=f"init/{k.node_name}")
             for k in node_side.kubelets]
    api = ApiServer(config, layout, members, node_side.streams)
    cron_period = float(options.get("cron_period_seconds") or 0) or None
    controller_manager = Component(CONTROLLER_MANAGER, lambda: [
        ReplicaSetController(gated, layout), DeploymentController(gated, layout),
        StatefulSetController(gated, layout), DaemonSetController(gated, layout), JobController(gated, layout),
        CronJobController(gated, layout, period_seconds=cron_period,
                          clock_origin=options.get(CLOCK_ORIGIN_OPTION)), GarbageCollector(gated, layout),
        NamespaceController(gated, layout), VolumeController(gated, layout),
        EndpointSliceController(gated, layout), EndpointsController(gated, layout),
        ServiceAccountsController(gated, layout)])
    scheduler = Component(SCHEDULER, lambda: [Scheduler(gated, layout)])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)  # debugging aid: every task's stack in the log
    log.info("server process up: %d kubelets", len(kubelets))
    while not stop.is_set():
        hub.changed.clear()
        if hub.runs(APISERVER) and not api.running and await api.start():
            await hub.api.set(True)
        elif not hub.runs(APISERVER) and api.running:
            await hub.api.set(False)
            await api.stop()
        for component, wanted in ((controller_manager, api.running and hub.runs(CONTROLLER_MANAGER)),
                                  (scheduler, api.running and hub.runs(SCHEDULER))):
            if wanted and not component.running:
                component.start()
            elif not wanted and component.running:
                await component.stop()
        for t in kubelets:
            if t.done() and not t.cancelled() and t.exception():
                log.error("%s stopped: %r", t.get_name(), t.exception())
                stop.set()
        waits = [asyncio.ensure_future(hub.changed.wait()), asyncio.ensure_future(stop.wait())]
        # Also every second: the API server retries its storage, and a failed start must be tried again.
        await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    log.info("shutting down")
    await hub.api.set(False)
    await api.stop()
    await controller_manager.stop()
    await scheduler.stop()
    for t in [*inits, *kubelets]:
        t.cancel()
    await asyncio.gather(*inits, *kubelets, return_exceptions=True)
    with contextlib.suppress(Exception):
        await node_side.close()
    await client_store.close()
    if external is not None and external_task is not None:
        external_task.cancel()
        await asyncio.gather(external_task, return_exceptions=True)
        await external.stop_all()


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=12)
        log.warning("task %s: %s", task.get_name(),
                    " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.serve")
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(Layout(args.dir.resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
