"""What a fresh cluster has before anyone creates anything: the four system namespaces, a ``default``
ServiceAccount in each and the ``kubernetes`` Service. Idempotent: safe on every server start.

With ``api_port``, the ``kubernetes`` Service's targetPort and its Endpoints and EndpointSlice follow the
port the server listens on, as kube-apiserver's endpoint reconciler keeps them on its --secure-port and
advertise address (kubeadm: 6443; here the port is chosen at run time). The Service keeps port 443.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.api.store import Store

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SERVICE_IP = "10.96.0.1"
ADVERTISE_ADDRESS = "127.0.0.1"
Json = dict[str, Any]


async def _ensure(store: Store, resource: str, obj: Json) -> None:
    try:
        await store.create(resource, obj)
    except ApiError as err:
        if err.reason != "AlreadyExists":
            raise


async def _put(store: Store, resource: str, name: str, wanted: Json, fields: tuple[str, ...]) -> None:
    """Create ``wanted``, or set its ``fields`` on the existing object when they differ."""
    try:
        await store.create(resource, wanted)
        return
    except ApiError as err:
        if err.reason != "AlreadyExists":
            raise

    def fix(obj: Json) -> Json | None:
        if all(obj.get(f) == wanted.get(f) for f in fields) and all(
                (obj["metadata"].get("labels") or {}).get(k) == v
                for k, v in (wanted["metadata"].get("labels") or {}).items()):
            return None
        for f in fields:
            obj[f] = wanted[f]
        obj["metadata"].setdefault("labels", {}).update(wanted["metadata"].get("labels") or {})
        return obj

    await store.mutate(resource, "default", name, fix)


async def _kubernetes_service(store: Store, api_port: int) -> None:
    def fix(svc: Json) -> Json | None:
        ports = (svc.get("spec") or {}).get("ports") or []
        https = [p for p in ports if p.get("name") == "https"]
        if https and all(p.get("targetPort") == api_port for p in https):
            return None
        for p in https:
            p["targetPort"] = api_port
        return svc

    await store.mutate("services", "default", "kubernetes", fix)
    # reconcilers.EndpointsAdapter: the Endpoints (not mirrored) and the EndpointSlice made from them.
    await _put(store, "endpoints", "kubernetes", {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ADVERTISE_ADDRESS}],
                     "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    }, ("subsets",))
    await _put(store, "endpointslices.discovery.k8s.io", "kubernetes", {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ADVERTISE_ADDRESS], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    }, ("addressType", "endpoints", "ports"))


async def bootstrap(store: Store, api_port: int | None = None) -> None:
    for ns in SYSTEM_NAMESPACES:
        await _ensure(store, "namespaces", {"metadata": {"name": ns}})
    for ns in SYSTEM_NAMESPACES:
        await _ensure(store, "serviceaccounts", {"metadata": {"name": "default", "namespace": ns}})
    await _ensure(store, "services", {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": SERVICE_IP, "ports": [{"name": "https", "port": 443,
                                                     "targetPort": api_port or 6443}]},
    })
    if api_port:
        await _kubernetes_service(store, api_port)
