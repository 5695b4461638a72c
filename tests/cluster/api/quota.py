"""ResourceQuota admission for object counts and claimed storage, refused with the real plugin's words.

The real plugin charges each create against ``status.used`` (kept by the quota controller) and refuses
with 403 ``exceeded quota: NAME, requested: R=1, used: R=N, limited: R=M``. Here ``used`` is counted from
the namespace's objects at each create, as the controller would have counted them; a dry run is checked
and charged nothing, as on a real server. Compute resources (cpu, memory) are not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.cluster.api import errors
from tests.cluster.control.provisioner import quantity_bytes

if TYPE_CHECKING:
    from tests.cluster.api.resources import Resource
    from tests.cluster.api.store import Store

Json = dict[str, Any]
# The quota names that count objects of a core resource without the count/ prefix.
_CORE_COUNTED = {"pods", "services", "secrets", "configmaps", "persistentvolumeclaims", "replicationcontrollers",
                 "resourcequotas"}


def _names(res: Resource) -> list[str]:
    names = [f"count/{res.key}"]
    if res.key in _CORE_COUNTED:
        names.append(res.key)
    return names


def _storage(claim: Json) -> float:
    return quantity_bytes((((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))


def _node_ports(svc: Json) -> int:
    spec = svc.get("spec") or {}
    return len(spec.get("ports") or []) if spec.get("type") in ("NodePort", "LoadBalancer") else 0


def _show(name: str, value: float) -> str:
    return f"{name}={int(value) if name != 'requests.storage' else _bytes(value)}"


def _bytes(value: float) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value and value % factor == 0:
            return f"{int(value // factor)}{unit}"
    return str(int(value))


async def quota_admission(store: Store, res: Resource, operation: str, obj: Json, old: Json | None,
                          warnings: list[str]) -> None:
    if operation != "CREATE" or not res.namespaced:
        return
    namespace = obj["metadata"].get("namespace") or "default"
    quotas, _ = await store.list("resourcequotas", namespace)
    if not quotas:
        return
    existing: list[Json] | None = None
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        hard = (quota.get("spec") or {}).get("hard") or {}
        charges: dict[str, float] = {name: 1 for name in _names(res) if name in hard}
        if res.key == "persistentvolumeclaims" and "requests.storage" in hard:
            charges["requests.storage"] = _storage(obj)
        if res.key == "services" and "services.nodeports" in hard and _node_ports(obj):
            charges["services.nodeports"] = _node_ports(obj)
        if not charges:
            continue
        if existing is None:
            existing, _ = await store.list(res.key, namespace)
        over = []
        for name, requested in sorted(charges.items()):
            if name == "requests.storage":
                used = sum(_storage(o) for o in existing)
            elif name == "services.nodeports":
                used = sum(_node_ports(o) for o in existing)
            else:
                used = len(existing)
            limit = quantity_bytes(hard[name])
            if used + requested > limit:
                over.append((name, requested, used, limit))
        if over:
            detail = (f"exceeded quota: {quota['metadata']['name']}, "
                      f"requested: {','.join(_show(n, r) for n, r, _, _ in over)}, "
                      f"used: {','.join(_show(n, u) for n, _, u, _ in over)}, "
                      f"limited: {','.join(_show(n, m) for n, _, _, m in over)}")
            raise errors.forbidden(res.plural, res.group, obj["metadata"].get("name"), detail)
