"""The node side of the server process: one Kubelet per node and the PodStreams serving them.

``serve.py`` calls ``bootstrap_cluster(store)`` once, then ``build(store, layout, nodes, options)``
and runs ``NodeSide.kubelets`` next to the controllers; ``options`` are those given to ``up``
(``exec_protocols``: allowed exec subprotocols, ``images``: NAME → busybox|etcd aliases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.cluster.control.layout import Layout
from tests.cluster.node.images import ImageStore
from tests.cluster.node.kubelet import Kubelet
from tests.cluster.node.streaming import V4, V5, NodeStreams

# The namespaces a real API server's bootstrap controller creates; kube-system holds the mirror pods
# and kube-node-lease the node heartbeats.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def bootstrap_cluster(store: Any) -> None:
    for name in SYSTEM_NAMESPACES:
        try:
            await store.get("namespaces", None, name)
            continue
        except Exception:
            pass
        try:
            await store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": name}})
        except Exception as e:
            if getattr(e, "code", None) != 409:
                raise


@dataclass
class NodeSide:
    kubelets: list[Kubelet]
    streams: NodeStreams

    async def close(self) -> None:
        for kubelet in self.kubelets:
            await kubelet.stop()


def build(store: Any, layout: Layout, nodes: list[str], options: dict[str, Any]) -> NodeSide:
    images = ImageStore(layout.images, options.get("images") or {})
    kubelets = [Kubelet(store, layout, name, images=images, node_index=i + 1)
                for i, name in enumerate(nodes)]
    by_name = {k.node_name: k for k in kubelets}
    # `up --exec-protocols v5,v4` stores the short names; the subprotocols are their full names.
    protocols = [p if "." in p else f"{p}.channel.k8s.io" for p in options.get("exec_protocols") or []]
    return NodeSide(kubelets, NodeStreams(by_name.get, protocols or [V5, V4]))
