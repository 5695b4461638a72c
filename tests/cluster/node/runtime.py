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

NODE_LEASE_NAMESPACE = "kube-node-lease"


async def bootstrap_cluster(store: Any) -> None:
    """Objects the node side expects: the namespace holding node heartbeats in a real cluster."""
    try:
        await store.get("namespaces", None, NODE_LEASE_NAMESPACE)
    except Exception:
        try:
            await store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NODE_LEASE_NAMESPACE}})
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
    protocols = options.get("exec_protocols") or [V5, V4]
    return NodeSide(kubelets, NodeStreams(by_name.get, protocols))
