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


def sleep_pids(arg: str, of: Cluster | None = None) -> list[int]:
    """Pids of container processes `sleep ARG` on this machine (a test's marker for "the pod's process"); with
    `of`, only that cluster's: other test runs sharing the machine run the same tests, and a pod of theirs
    (or one a stopped run left behind) must not pass for this cluster's."""
    server = int(of.state["server"]["pid"]) if of is not None and of.state["server"].get("pid") else None
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [b"sleep", arg.encode()] and (of is None or (server is not None
                                                                    and _descends_from(int(pid), server))):
            pids.append(int(pid))
    return pids


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether `ancestor` is among pid's parents (a pod's processes are children of the cluster's server
    process: server → bwrap → the container's command)."""
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False
