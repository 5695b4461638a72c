"""Rook's objects that describe the mons, read and written as plain dicts, and their formats.

- ConfigMap ``rook-ceph-mon-endpoints``: ``data: a=10.0.0.1:6789,b=…`` (each mon's v1 address), ``mapping``
  (JSON: mon → node), ``maxMonId``; the operator rebuilds its mon list from it.
- Secret ``rook-ceph-config``: ``mon_host`` (``[v2:IP:3300,v1:IP:6789],[…]``) and ``mon_initial_members``
  (``a,b,c``); the mon pods take ``--mon-host``/``--mon-initial-members`` from it through their env.
- Secret ``rook-ceph-mon``: ``fsid``. Deployments ``rook-ceph-mon-ID`` (``ceph_daemon_id=ID``) and
  ``rook-ceph-operator``.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.pauses import pauses

ENDPOINTS = "rook-ceph-mon-endpoints"
CONFIG_SECRET = "rook-ceph-config"
MON_SECRET = "rook-ceph-mon"
OPERATOR = "rook-ceph-operator"
MON_SELECTOR = "app=rook-ceph-mon"
MERGE_PATCH = "application/merge-patch+json"
_MON_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ADDRVEC = re.compile(r"\[[^\]]*\]|[^,\[\]]+")


@dataclass(frozen=True)
class Endpoint:
    mon: str
    address: str  # IP:PORT (the v1 address Rook records)


def parse_endpoints(data: str) -> list[Endpoint]:
    """``a=10.0.0.1:6789,b=…`` as Rook writes it (pkg/operator/ceph/cluster/mon/config.go)."""
    out: list[Endpoint] = []
    for item in (i.strip() for i in data.split(",") if i.strip()):
        mon, sep, address = item.partition("=")
        if not sep or not _MON_ID.match(mon) or not address:
            raise DrError(f"ConfigMap {ENDPOINTS}: cannot read the entry {item!r} (expected ID=IP:PORT)")
        out.append(Endpoint(mon, address))
    return out


def format_endpoints(endpoints: list[Endpoint]) -> str:
    return ",".join(f"{e.mon}={e.address}" for e in endpoints)


def split_mon_host(value: str) -> list[str]:
    """``[v2:…,v1:…],[v2:…,v1:…]`` or ``IP:PORT,IP:PORT``: one entry per mon."""
    return [m.group(0).strip() for m in _ADDRVEC.finditer(value) if m.group(0).strip()]


def entry_for(entries: list[str], address: str) -> str | None:
    """The mon_host entry that holds this IP:PORT (its v1 or only address)."""
    for entry in entries:
        inner = entry.strip("[]").split(",")
        if any(part.split(":", 1)[-1] == address or part == address for part in inner):
            return entry
    return None


def decode(secret: dict[str, Any], key: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    return base64.b64decode(raw).decode() if raw else ""


def encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def valid_mon_id(mon: str) -> str:
    if not _MON_ID.match(mon):
        raise DrError(f"{mon!r} is not a mon ID (Rook names mons a, b, c, …)")
    return mon


class Objects:
    """Reads and writes of the objects in one Rook cluster namespace."""

    def __init__(self, kube: Kube, namespace: str, operator_namespace: str | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.operator_namespace = operator_namespace or namespace

    def _path(self, kind: str, name: str = "", namespace: str | None = None) -> str:
        group = "/apis/apps/v1" if kind == "deployments" else "/api/v1"
        base = f"{group}/namespaces/{namespace or self.namespace}/{kind}"
        return f"{base}/{name}" if name else base

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = self.kube.get(self._path(kind, name, namespace))
        return obj

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.get(kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def mon_deployments(self) -> dict[str, dict[str, Any]]:
        """mon ID → its Deployment (by Rook's labels), maintenance copies left out."""
        found = self.kube.get(self._path("deployments"), labelSelector=MON_SELECTOR)
        out: dict[str, dict[str, Any]] = {}
        for d in found.get("items") or []:
            labels = d["metadata"].get("labels") or {}
            if d["metadata"]["name"].endswith("-maintenance"):
                continue
            mon = labels.get("ceph_daemon_id") or labels.get("mon")
            if mon:
                out[str(mon)] = d
        return dict(sorted(out.items()))

    def operator(self) -> dict[str, Any] | None:
        return self.find("deployments", OPERATOR, self.operator_namespace)

    def pods(self, selector: dict[str, str], namespace: str | None = None) -> list[dict[str, Any]]:
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        found = self.kube.get(self._path("pods", namespace=namespace), labelSelector=text)
        return list(found.get("items") or [])

    def scale(self, name: str, replicas: int, namespace: str | None = None) -> None:
        self.kube.request("PATCH", self._path("deployments", name, namespace), body={"spec": {"replicas": replicas}},
                          content_type=MERGE_PATCH)

    def wait_no_pods(self, selector: dict[str, str], what: str, timeout: float = 180.0,
                     namespace: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        pause = pauses(1.0)
        while True:
            left = [p["metadata"]["name"] for p in self.pods(selector, namespace)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise DrError(f"{what}: pods {', '.join(left)} still exist after {timeout:.0f}s")
            time.sleep(next(pause))


def replicas(deployment: dict[str, Any] | None) -> int:
    if deployment is None:
        return 0
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def ready(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
