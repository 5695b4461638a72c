"""Helpers shared by the conformance tests: manifests and polling through real kubectl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.fixture import Cluster

BUSYBOX = "busybox:1.36"
ETCD_IMAGE = "registry.k8s.io/etcd:3.4.23-0"
CONTROL_PLANE_TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                            "effect": "NoSchedule"}


def manifest(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def pod(name: str, namespace: str, *, command: list[str] | None = None, image: str = BUSYBOX,
        **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image,
                                 "command": command or ["sh", "-c", "sleep 3600"]}
    if "volumeMounts" in spec:
        container["volumeMounts"] = spec.pop("volumeMounts")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [container], **spec}}


def get_json(cluster: Cluster, *args: str, version: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *args, "-o", "json", version=version).stdout
    data: dict[str, Any] = json.loads(out)
    return data

def events_for(cluster: Cluster, namespace: str, name: str, *, version: str) -> list[dict[str, Any]]:
    data = get_json(cluster, "events", "-n", namespace, version=version)
    return [e for e in data["items"] if e["involvedObject"].get("name") == name]


def sleep_pids(arg: str) -> list[int]:
    """Pids of container processes `sleep ARG` on this machine (a test's marker for "the pod's process")."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [b"sleep", arg.encode()]:
            pids.append(int(pid))
    return pids
