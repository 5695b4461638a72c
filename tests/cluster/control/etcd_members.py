"""Real etcd members with kubeadm's TLS layout, one per control-plane node.

Each member is the node's etcd static pod (manifests written by `up`, see static_pods.py), run by the
node's kubelet in a sandbox of the etcd image with the manifest's flags and hostPath volumes
(/etc/kubernetes/pki/etcd and /var/lib/etcd of the node's host directory). This module plans the members
(names, ports), builds kubeadm's command line and asks a member for its health.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.cluster.control.ports import free_ports

PKI_DIR = "/etc/kubernetes/pki/etcd"
DATA_DIR = "/var/lib/etcd"


@dataclass(frozen=True)
class Member:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


def external_hosts(count: int) -> list[str]:
    """The hosts of an external etcd: not nodes of the cluster (no kubelet), each with its own directory."""
    return [f"etcd-{i + 1}" for i in range(count)]


def disabled_flag(host_root: Path) -> Path:
    """An external member's host: while this file exists its etcd is stopped (`systemctl stop etcd`)."""
    return host_root / "etc" / "etcd" / "disabled"


def plan_members(nodes: list[str]) -> list[Member]:
    ports = free_ports(3 * len(nodes))
    return [Member(n, *ports[3 * i : 3 * i + 3]) for i, n in enumerate(nodes)]


def members_to_state(members: list[Member]) -> list[dict[str, object]]:
    return [asdict(m) for m in members]


def members_from_state(state: list[dict[str, int | str]]) -> list[Member]:
    return [Member(str(m["name"]), int(m["client_port"]), int(m["peer_port"]), int(m["metrics_port"]))
            for m in state]


def etcd_command(member: Member, members: list[Member], *, host_root: str = "") -> list[str]:
    """kubeadm's etcd command line (cmd/kubeadm/app/phases/etcd/local.go), sorted as kubeadm sorts it.

    host_root="" gives the in-pod paths for the manifest; a node directory gives the real process's.
    """
    pki, data = host_root + PKI_DIR, host_root + DATA_DIR
    initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    flags = {
        "advertise-client-urls": member.client_url,
        "cert-file": f"{pki}/server.crt",
        "client-cert-auth": "true",
        "data-dir": data,
        "experimental-initial-corrupt-check": "true",
        "experimental-watch-progress-notify-interval": "5s",
        "initial-advertise-peer-urls": member.peer_url,
        "initial-cluster": initial_cluster,
        "key-file": f"{pki}/server.key",
        "listen-client-urls": member.client_url,
        "listen-metrics-urls": member.metrics_url,
        "listen-peer-urls": member.peer_url,
        "name": member.name,
        "peer-cert-file": f"{pki}/peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": f"{pki}/peer.key",
        "peer-trusted-ca-file": f"{pki}/ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": f"{pki}/ca.crt",
    }
    if len(members) > 1:
        # kubeadm adds the state flag for members that join (`existing`); these members form the cluster
        # together, so they say `new` (the default a single kubeadm-init member leaves implicit).
        flags["initial-cluster-state"] = "new"
    return ["etcd", *(f"--{k}={v}" for k, v in flags.items())]


def healthy(member: Member, timeout: float = 1.0) -> bool:
    """etcd's /health on the metrics listener: what kubeadm's liveness and startup probes ask."""
    try:
        with urllib.request.urlopen(f"{member.metrics_url}/health", timeout=timeout) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def wait_healthy(members: list[Member], alive: Callable[[], bool], timeout: float = 30.0) -> None:
    """Until every member answers /health; `alive` says whether whoever runs them still does."""
    deadline = time.monotonic() + timeout
    pending = list(members)
    while pending:
        pending = [m for m in pending if not healthy(m)]
        if pending and not alive():
            raise RuntimeError("the server process exited; see logs/server.log")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"etcd members not healthy after {timeout:.0f}s: {[m.name for m in pending]}")
        if pending:
            time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        # A zombie child of ours still "exists"; reap it first so a dead member is reported dead.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after timeout; returns once the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
