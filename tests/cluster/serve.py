"""The loopback cluster's server process: API server, scheduler, controllers, mirror pods and kubelets
in one asyncio loop (`python -m tests.cluster.serve --dir DIR`, started by `up`).

Everything it needs comes from DIR/state.json, written by `up`. SIGTERM or SIGINT stop it cleanly:
the API stops accepting requests, the loops are cancelled, and the pod processes end with it (they run
with --die-with-parent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

from tests.cluster.api.bootstrap import bootstrap
from tests.cluster.api.config import ApiConfig
from tests.cluster.api.server import serve
from tests.cluster.api.store import Store
from tests.cluster.control import etcd_members as em
from tests.cluster.control.daemonset import DaemonSetController
from tests.cluster.control.deployment import DeploymentController
from tests.cluster.control.garbage_collector import GarbageCollector
from tests.cluster.control.job import JobController
from tests.cluster.control.layout import Layout
from tests.cluster.control.mirror_pods import MirrorPods
from tests.cluster.control.namespaces import NamespaceController
from tests.cluster.control.nodes import ensure_nodes
from tests.cluster.control.provisioner import VolumeController, ensure_default_class
from tests.cluster.control.replicaset import ReplicaSetController
from tests.cluster.control.scheduler import Scheduler
from tests.cluster.control.statefulset import StatefulSetController
from tests.cluster.node import runtime as node_runtime

log = logging.getLogger("tests.cluster.serve")


class Runnable(Protocol):
    async def run(self) -> None: ...


def open_store(layout: Layout, members: list[em.Member], api_dir: Path) -> Store:
    pki = layout.pki
    return Store.open([m.client_url for m in members], api_dir / "discovery",
                      ca_file=pki / "etcd-ca.crt", cert_file=pki / "apiserver-etcd-client.crt",
                      key_file=pki / "apiserver-etcd-client.key")


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
    store = open_store(layout, members, config.resolved_api_dir)
    await bootstrap(store, api_port=config.port)  # the port is fixed in state.json before start
    await node_runtime.bootstrap_cluster(store)
    await ensure_default_class(store)
    await ensure_nodes(store, cps, workers)
    node_side = node_runtime.build(store, layout, [*cps, *workers], options)

    loops: list[Runnable] = [
        Scheduler(store, layout), ReplicaSetController(store, layout), DeploymentController(store, layout),
        StatefulSetController(store, layout), DaemonSetController(store, layout), JobController(store, layout),
        GarbageCollector(store, layout), NamespaceController(store, layout), VolumeController(store, layout),
        MirrorPods(store, layout, members), *node_side.kubelets,
    ]
    tasks = [asyncio.create_task(loop.run(), name=type(loop).__name__) for loop in loops]
    server = await serve(config, store, node_side.streams)
    log.info("serving on https://127.0.0.1:%s", server.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.ensure_future(asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION))
    done = asyncio.ensure_future(stop.wait())
    await asyncio.wait([failed, done], return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception():
            log.error("%s stopped: %r", t.get_name(), t.exception())
    log.info("shutting down")
    await server.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    failed.cancel()
    done.cancel()
    with contextlib.suppress(Exception):
        await node_side.close()
    await store.close()


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
