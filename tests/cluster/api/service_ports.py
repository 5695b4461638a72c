"""Service cluster IPs and node ports as the real allocators hand them out (an admission step here).

A real API server keeps bitmaps of the service CIDR and of the node-port range; a Service asking for
an address or port someone holds is refused with the allocator's words ("provided port is already
allocated"), one without a node port gets a free one from 30000-32767. Here the bitmap is the list of
Services itself (read at each write; two creates racing for one port are not serialized).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from tests.cluster.api import errors
from tests.cluster.api.errors import FieldError

if TYPE_CHECKING:
    from tests.cluster.api.resources import Resource
    from tests.cluster.api.store import Store

Json = dict[str, Any]
NODE_PORTS = range(30000, 32768)
_NEEDS_NODE_PORT = ("NodePort", "LoadBalancer")


def _held(services: list[Json], me: Json) -> tuple[set[str], set[int]]:
    ips: set[str] = set()
    ports: set[int] = set()
    key = (me["metadata"].get("namespace"), me["metadata"].get("name"))
    for svc in services:
        if (svc["metadata"].get("namespace"), svc["metadata"].get("name")) == key:
            continue
        spec = svc.get("spec") or {}
        ips.update(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None")
        ports.update(int(p["nodePort"]) for p in spec.get("ports") or [] if p.get("nodePort"))
    return ips, ports


async def service_allocation(store: Store, res: Resource, operation: str, obj: Json, old: Json | None,
                             warnings: list[str]) -> None:
    if res.key != "services" or operation not in ("CREATE", "UPDATE"):
        return
    spec = obj.setdefault("spec", {})
    name = obj["metadata"].get("name", "")
    services, _ = await store.list("services")
    ips, ports = _held(services, obj)
    problems: list[FieldError] = []
    old_ips = set(((old or {}).get("spec") or {}).get("clusterIPs") or [])
    for ip in spec.get("clusterIPs") or []:
        if ip != "None" and ip in ips and ip not in old_ips:
            # field.Invalid prints the []string value in Go syntax before the allocator's words.
            problems.append(FieldError("FieldValueInvalid", "spec.clusterIPs",
                                       f'[]string{{"{ip}"}}: failed to allocate IP {ip}: provided IP is already '
                                       "allocated", show_value=False))
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                 for p in ((old or {}).get("spec") or {}).get("ports") or []}
    wants = spec.get("type") in _NEEDS_NODE_PORT
    for i, port in enumerate(spec.get("ports") or []):
        if not wants:
            if port.get("nodePort"):
                problems.append(FieldError("FieldValueForbidden", f"spec.ports[{i}].nodePort",
                                           "may not be used when `type` is 'ClusterIP'"))
            continue
        given = port.get("nodePort")
        if given is None:
            kept = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
            if kept and kept not in ports:
                port["nodePort"] = kept  # an update that omits it keeps the one allocated before
                ports.add(kept)
                continue
            free = [p for p in NODE_PORTS if p not in ports]
            if not free:
                raise errors.ApiError(500, "InternalError", "failed to allocate a nodePort: range is full")
            port["nodePort"] = random.choice(free)
            ports.add(port["nodePort"])
            continue
        if int(given) not in NODE_PORTS:
            problems.append(FieldError("FieldValueInvalid", f"spec.ports[{i}].nodePort",
                                       "provided port is not in the valid range. The range of valid ports is "
                                       "30000-32767", int(given)))
        elif int(given) in ports and int(given) not in old_ports.values():
            problems.append(FieldError("FieldValueInvalid", f"spec.ports[{i}].nodePort",
                                       "provided port is already allocated", int(given)))
        else:
            ports.add(int(given))
    if problems:
        raise errors.invalid("Service", "", name, problems)
