"""Objects a kubeadm cluster has from the start that the control plane here relies on: the system
namespaces (mirror pods live in kube-system) and the default StorageClass."""

from __future__ import annotations

from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.provisioner import default_storage_class

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _create_missing(store: Any, resource: str, obj: dict[str, Any]) -> None:
    try:
        await store.create(resource, obj)
    except ApiError as exc:
        if exc.code != 409:
            raise


async def ensure_system_objects(store: Any) -> None:
    for name in SYSTEM_NAMESPACES:
        await _create_missing(store, "namespaces",
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    await _create_missing(store, "storageclasses.storage.k8s.io", default_storage_class())
