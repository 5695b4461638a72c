"""What a fresh cluster has before anyone creates anything: the four system namespaces, a ``default``
ServiceAccount in each and the ``kubernetes`` Service. Idempotent: safe on every server start."""

from __future__ import annotations

from tests.cluster.api.errors import ApiError
from tests.cluster.api.store import Store

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(store: Store, resource: str, obj: dict[str, object]) -> None:
    try:
        await store.create(resource, obj)
    except ApiError as err:
        if err.reason != "AlreadyExists":
            raise


async def bootstrap(store: Store) -> None:
    for ns in SYSTEM_NAMESPACES:
        await _ensure(store, "namespaces", {"metadata": {"name": ns}})
    for ns in SYSTEM_NAMESPACES:
        await _ensure(store, "serviceaccounts", {"metadata": {"name": "default", "namespace": ns}})
    await _ensure(store, "services", {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
    })
