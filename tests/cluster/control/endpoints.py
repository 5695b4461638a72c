"""The EndpointSlice and Endpoints controllers: a Service with a selector gets the addresses of its pods.

EndpointSlice (pkg/controller/endpointslice, staging k8s.io/endpointslice): for every Service with a selector
and not of type ExternalName, slices (``discovery.k8s.io/v1``, generateName ``SERVICE-``) labelled
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io``
(plus the Service's own labels, and ``service.kubernetes.io/headless`` when headless), controlled by the
Service. Each endpoint is a pod the selector matches that has an IP and is not terminal: its address,
``ready``/``serving``/``terminating`` conditions (ready = publishNotReadyAddresses or ready and not
terminating), ``nodeName``, ``targetRef``, ``hostname`` when the pod's subdomain is the Service. Ports are the
Service's, target ports resolved per pod (a named target port looks up the containers' named ports of the
same protocol; a pod without it has no such port), so pods whose ports resolve differently are in different
slices. At most 100 endpoints per slice. A Service whose pods are all gone keeps one placeholder slice
(``endpoints`` and ``ports`` null). Slices of this controller that no Service owns any more (a Service deleted
and made again under the same name) are deleted; the garbage collector removes those of deleted Services.

Endpoints (pkg/controller/endpoint): the legacy object named after the Service, with the Service's labels, ready
pods in ``addresses`` and the others in ``notReadyAddresses`` (terminating pods left out unless
publishNotReadyAddresses), grouped into subsets by port set. It is deleted with its Service; at its start the
controller deletes every Endpoints without a Service (checkLeftoverEndpoints), leader-election records excepted.

Not modelled: the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation, topology hints, zones (no
node carries a zone label here), dual-stack (every pod has one IPv4 address), and the slices' packing
heuristics (endpoints are sorted by pod name and cut into slices of 100).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, by_namespace, is_terminating, pod_phase, pod_ready, uid

SLICES = "endpointslices.discovery.k8s.io"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
LEADER = "control-plane.alpha.kubernetes.io/leader"
MAX_ENDPOINTS = 100
_RESERVED = (SERVICE_NAME, MANAGED_BY, HEADLESS)


def selects_pods(svc: Json) -> bool:
    spec = svc.get("spec") or {}
    # An empty selector is dropped on the wire (omitempty), so it is no selector.
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def _selected(svc: Json, pods: list[Json]) -> list[Json]:
    selector: dict[str, str] = svc["spec"]["selector"]
    return [p for p in pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]


def in_endpoints(pod: Json, include_terminating: bool) -> bool:
    """endpointsliceutil.ShouldPodBeInEndpoints."""
    status = pod.get("status") or {}
    if pod_phase(pod) in ("Succeeded", "Failed"):
        return False
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    return include_terminating or not is_terminating(pod)


def find_port(pod: Json, port: Json) -> int | None:
    """FindPort: a number is used as is; a name is looked up among the containers' (and sidecars') ports."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(p["containerPort"])
    return None


def _headless(svc: Json) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") in ("None", "", None)


def _ports(svc: Json, pod: Json, *, slice_form: bool) -> list[Json]:
    out: list[Json] = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue
        port: Json = {"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")}
        if not slice_form and not port["name"]:
            port.pop("name")  # core EndpointPort.name is omitempty; discovery's is a pointer, always sent
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def _hostname(svc: Json, pod: Json) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        return str(spec["hostname"])
    return None


def _target_ref(pod: Json) -> Json:
    m = pod["metadata"]
    return {"kind": "Pod", "namespace": m["namespace"], "name": m["name"], "uid": m["uid"]}


def _ip(pod: Json) -> str:
    status = pod.get("status") or {}
    return str(status.get("podIP") or (status.get("podIPs") or [{}])[0].get("ip", ""))


def _labels(svc: Json) -> dict[str, str]:
    labels = {k: v for k, v in (svc["metadata"].get("labels") or {}).items() if k not in _RESERVED}
    if _headless(svc):
        labels[HEADLESS] = ""
    return labels


def desired_slices(svc: Json, pods: list[Json]) -> list[tuple[list[Json] | None, list[Json] | None]]:
    """(ports, endpoints) of each slice the Service should have; one placeholder (None, None) when empty."""
    publish = bool(svc["spec"].get("publishNotReadyAddresses"))
    groups: dict[str, tuple[list[Json], list[Json]]] = {}
    for pod in sorted(_selected(svc, pods), key=lambda p: p["metadata"]["name"]):
        if not in_endpoints(pod, include_terminating=True):
            continue
        ports = _ports(svc, pod, slice_form=True)
        serving = pod_ready(pod)
        terminating = is_terminating(pod)
        ep: Json = {"addresses": [_ip(pod)],
                    "conditions": {"ready": publish or (serving and not terminating), "serving": serving,
                                   "terminating": terminating}}
        if (hostname := _hostname(svc, pod)) is not None:
            ep["hostname"] = hostname
        ep["targetRef"] = _target_ref(pod)
        if pod["spec"].get("nodeName"):
            ep["nodeName"] = pod["spec"]["nodeName"]
        key = repr(ports)
        groups.setdefault(key, (ports, []))[1].append(ep)
    out: list[tuple[list[Json] | None, list[Json] | None]] = []
    for ports, eps in groups.values():
        for i in range(0, len(eps), MAX_ENDPOINTS):
            out.append((ports or None, eps[i:i + MAX_ENDPOINTS]))
    return out or [(None, None)]


def desired_subsets(svc: Json, pods: list[Json]) -> list[Json]:
    """The Endpoints subsets: addresses grouped by the port set they serve (RepackSubsets)."""
    publish = bool(svc["spec"].get("publishNotReadyAddresses"))
    groups: dict[str, Json] = {}
    no_ports_ok = _headless(svc) and not svc["spec"].get("ports")
    for pod in _selected(svc, pods):
        if not in_endpoints(pod, include_terminating=publish):
            continue
        ports = _ports(svc, pod, slice_form=False)
        if not ports and not no_ports_ok:
            continue
        addr: Json = {"ip": _ip(pod)}
        if (hostname := _hostname(svc, pod)) is not None:
            addr["hostname"] = hostname
        if pod["spec"].get("nodeName"):
            addr["nodeName"] = pod["spec"]["nodeName"]
        addr["targetRef"] = _target_ref(pod)
        subset = groups.setdefault(repr(ports), {"ports": ports} if ports else {})
        kind = "addresses" if publish or pod_ready(pod) else "notReadyAddresses"
        subset.setdefault(kind, []).append(addr)
    subsets: list[Json] = []
    for subset in groups.values():
        for kind in ("addresses", "notReadyAddresses"):
            if kind in subset:
                subset[kind].sort(key=lambda a: (a["ip"], a["targetRef"]["uid"]))
        subsets.append({k: subset[k] for k in ("addresses", "notReadyAddresses", "ports") if k in subset})
    return subsets


class EndpointSliceController(Controller):
    name = "endpointslice-controller"
    watches = ("services", "pods", SLICES)

    async def reconcile(self) -> None:
        services, _ = await self.store.list("services")
        pods, _ = await self.store.list("pods")
        slices, _ = await self.store.list(SLICES, label_selector=f"{MANAGED_BY}={CONTROLLER}")
        pods_in = by_namespace(pods)
        slices_of: dict[tuple[str, str], list[Json]] = {}
        for s in slices:
            key = (s["metadata"]["namespace"], (s["metadata"].get("labels") or {}).get(SERVICE_NAME, ""))
            slices_of.setdefault(key, []).append(s)
        for svc in services:
            if not selects_pods(svc) or is_terminating(svc):
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            await self.sync(svc, pods_in.get(ns, []), slices_of.get((ns, name), []))

    async def sync(self, svc: Json, pods: list[Json], existing: list[Json]) -> None:
        ns = svc["metadata"]["namespace"]
        owned = [s for s in existing if any(r.get("uid") == uid(svc) and r.get("kind") == "Service"
                                            for r in s["metadata"].get("ownerReferences") or [])]
        # Slices of a former Service of this name, or of another address type, go (reconciler.reconcile).
        stale = [s for s in existing if s not in owned or s.get("addressType") != "IPv4"]
        owned = [s for s in owned if s not in stale]
        labels = {**_labels(svc), SERVICE_NAME: svc["metadata"]["name"], MANAGED_BY: CONTROLLER}
        unused = list(owned)
        for ports, endpoints in desired_slices(svc, pods):
            current = next((s for s in unused if s.get("ports") == ports), None)
            if current is None:
                await self.store.create(SLICES, {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": _prefix(svc["metadata"]["name"]), "namespace": ns,
                                 "labels": labels,
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                                      "name": svc["metadata"]["name"], "uid": uid(svc),
                                                      "controller": True, "blockOwnerDeletion": True}]},
                    "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
                })
                continue
            unused.remove(current)
            if current.get("endpoints") == endpoints and current["metadata"].get("labels") == labels:
                continue

            def edit(o: Json, endpoints: list[Json] | None = endpoints) -> Json | None:
                if o.get("endpoints") == endpoints and o["metadata"].get("labels") == labels:
                    return None
                o["endpoints"] = copy.deepcopy(endpoints)
                o["metadata"]["labels"] = dict(labels)
                return o

            await self.store.mutate(SLICES, ns, current["metadata"]["name"], edit)
        for s in [*stale, *unused]:
            try:
                await self.store.delete(SLICES, ns, s["metadata"]["name"])
            except ApiError as exc:
                if exc.code != 404:
                    raise


def _prefix(service: str) -> str:
    # getEndpointSlicePrefix: "NAME-" unless that is no longer a valid name (too long), then "NAME".
    return f"{service}-" if len(service) + 1 <= 253 else service


class EndpointsController(Controller):
    name = "endpoint-controller"
    watches = ("services", "pods", "endpoints")

    def __init__(self, store: Any, layout: Layout) -> None:
        super().__init__(store, layout)
        self._seen: set[tuple[str, str]] | None = None  # Services with a selector seen in the last pass

    async def reconcile(self) -> None:
        services, _ = await self.store.list("services")
        pods, _ = await self.store.list("pods")
        endpoints, _ = await self.store.list("endpoints")
        pods_in = by_namespace(pods)
        present = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        selecting = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services if selects_pods(s)}
        for ep in endpoints:
            key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if key in present or LEADER in (ep["metadata"].get("annotations") or {}):
                continue
            # At start every Endpoints without a Service goes (checkLeftoverEndpoints); later only those
            # of Services this controller saw with a selector and that are gone now.
            if self._seen is None or key in self._seen:
                try:
                    await self.store.delete("endpoints", key[0], key[1])
                except ApiError as exc:
                    if exc.code != 404:
                        raise
        self._seen = selecting
        by_key = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
        for svc in services:
            if not selects_pods(svc) or is_terminating(svc):
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            await self.sync(svc, pods_in.get(ns, []), by_key.get((ns, name)))

    async def sync(self, svc: Json, pods: list[Json], current: Json | None) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        subsets = desired_subsets(svc, pods)
        labels = _labels(svc)
        if current is None:
            obj: Json = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": ns, **({"labels": labels} if labels else {})}}
            if subsets:
                obj["subsets"] = subsets
            try:
                await self.store.create("endpoints", obj)
            except ApiError as exc:
                if exc.code != 409:
                    raise
            return

        def edit(o: Json) -> Json | None:
            if (o.get("subsets") or []) == subsets and (o["metadata"].get("labels") or {}) == labels:
                return None
            if subsets:
                o["subsets"] = subsets
            else:
                o.pop("subsets", None)
            if labels:
                o["metadata"]["labels"] = dict(labels)
            else:
                o["metadata"].pop("labels", None)
            return o

        try:
            await self.store.mutate("endpoints", ns, name, edit)
        except ApiError as exc:
            if exc.code != 404:
                raise
