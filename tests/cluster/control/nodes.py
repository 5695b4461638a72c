"""The Node objects of the loopback cluster, created (with kubeadm's labels and taints) before the
kubelets start; the kubelets then own their status."""

from __future__ import annotations

from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.objects import Json

CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
CONTROL_PLANE_TAINT = {"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}


def node_names(control_planes: int, workers: int) -> tuple[list[str], list[str]]:
    return [f"cp-{i}" for i in range(1, control_planes + 1)], [f"worker-{i}" for i in range(1, workers + 1)]


def node_object(name: str, *, control_plane: bool) -> Json:
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    if control_plane:
        labels[CONTROL_PLANE_ROLE] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    node: Json = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "labels": labels,
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"taints": [dict(CONTROL_PLANE_TAINT)]} if control_plane else {},
    }
    return node


async def ensure_nodes(store: Any, control_planes: list[str], workers: list[str]) -> None:
    """Create missing Node objects; existing ones (a restarted server) are kept as they are."""
    for name in [*control_planes, *workers]:
        try:
            await store.create("nodes", node_object(name, control_plane=name in control_planes))
        except ApiError as exc:
            if exc.code != 409:
                raise
