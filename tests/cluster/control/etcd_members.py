"""Real etcd members with kubeadm's TLS layout, one per control-plane node.

The members run as plain processes started by `up` (no kubelet runs them); each node's static pod
manifest (see static_pods.py) carries exactly the flags the process was started with, with the node's
host paths in place of /etc/kubernetes/pki/etcd and /var/lib/etcd, so what a tool reads from the
mirror pod is what it would read on a kubeadm node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.cluster.control.layout import Layout
from tests.cluster.control.ports import free_ports

ETCD_BINARY = "/usr/bin/etcd"
ETCD_IMAGE = "registry.k8s.io/etcd:3.4.23-0"  # the tag of the version of the real binary we run
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


def start_member(layout: Layout, member: Member, members: list[Member]) -> int:
    """Start one member in its own session so it outlives `up`; returns its pid."""
    root = str(layout.node(member.name))
    layout.etcd_data(member.name).mkdir(parents=True, exist_ok=True)
    layout.etcd_data(member.name).chmod(0o700)  # etcd 3.4 warns about (and later refuses) wider modes
    layout.logs.mkdir(parents=True, exist_ok=True)
    cmd = etcd_command(member, members, host_root=root)
    with open(layout.logs / f"etcd-{member.name}.log", "ab") as log:
        proc = subprocess.Popen(
            [ETCD_BINARY, *cmd[1:]], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, cwd=root,
        )
    return proc.pid


def healthy(member: Member, timeout: float = 1.0) -> bool:
    """etcd's /health on the metrics listener: what kubeadm's liveness and startup probes ask."""
    try:
        with urllib.request.urlopen(f"{member.metrics_url}/health", timeout=timeout) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def wait_healthy(members: list[Member], pids: dict[str, int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(members)
    while pending:
        pending = [m for m in pending if not healthy(m)]
        for m in pending:
            if not pid_alive(pids[m.name]):
                raise RuntimeError(f"etcd member {m.name} exited; see logs/etcd-{m.name}.log")
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
