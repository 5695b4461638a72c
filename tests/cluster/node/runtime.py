"""The node side of the server process: one Kubelet per node and the PodStreams serving them.

``serve.py`` calls ``build(store, layout, nodes, options, hub=…, control_planes=…)``
and runs ``NodeSide.kubelets`` next to the controllers; ``options`` are those given to ``up``
(``exec_protocols``: allowed exec subprotocols, ``images``: NAME → busybox|etcd aliases, ``link_mbit``:
the exec streams' rate per direction, none for unlimited).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.cluster import etcd_versions
from tests.cluster.control.hub import Hub
from tests.cluster.control.layout import Layout
from tests.cluster.node.images import ImageStore
from tests.cluster.node.kubelet import Kubelet
from tests.cluster.node.streaming import V4, V5, NodeStreams


@dataclass
class NodeSide:
    kubelets: list[Kubelet]
    streams: NodeStreams

    async def close(self) -> None:
        for kubelet in self.kubelets:
            await kubelet.stop()


def build(store: Any, layout: Layout, nodes: list[str], options: dict[str, Any], *, hub: Hub | None = None,
          control_planes: list[str] | None = None) -> NodeSide:
    images = ImageStore(layout.images, options.get("images") or {},
                        etcd_version=options.get("etcd_version") or etcd_versions.DEFAULT)
    kubelets = [Kubelet(store, layout, name, images=images, node_index=i + 1, hub=hub,
                        control_plane=name in (control_planes or []))
                for i, name in enumerate(nodes)]
    by_name = {k.node_name: k for k in kubelets}
    # `up --exec-protocols v5,v4` stores the short names; the subprotocols are their full names.
    protocols = [p if "." in p else f"{p}.channel.k8s.io" for p in options.get("exec_protocols") or []]
    link = options.get("link_mbit")
    return NodeSide(kubelets, NodeStreams(by_name.get, protocols or [V5, V4], float(link) if link else None))
