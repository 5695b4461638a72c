"""The loopback cluster's own life cycle, observed with real kubectl: a 3-member etcd run by the kubelets as
kubeadm-style static pods with their mirror pods, an exec path restricted to v4.channel.k8s.io, restarts
that keep state, and `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import websocket

from tests.cluster.__main__ import listening
from tests.cluster.control.etcd_members import healthy
from tests.cluster.control.processes import cmdline
from tests.cluster.fixture import KUBECTL_VERSIONS, Cluster, ClusterFactory
from tests.conformance.kube import get_json, manifest
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
STARTUP_TARGET_SECONDS = 20.0


@pytest.fixture(scope="module")
def ha(cluster_factory: ClusterFactory) -> Cluster:
    return cluster_factory(control_planes=3, workers=1, exec_protocols=("v4",))


def etcd_ready(cluster: Cluster, node: str) -> bool | None:
    """Whether the etcd mirror pod is Ready; None when there is none (the static pod is not there)."""
    result = cluster.kubectl("-n", "kube-system", "get", "pod", f"etcd-{node}", "-o", "json", check=False,
                             version=KUBECTL_VERSIONS[-1])
    if result.returncode != 0:
        return None
    pod = json.loads(result.stdout)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def startup_bound(c: Cluster) -> float:
    """The target stretched by the machine's run queue during the start-up: the start-up is CPU work (PKI,
    the server's imports, etcd's elections, node registration), and with N runnable processes per CPU the
    scheduler gives it about 1/N of one, so its wall time stretches N-fold. On a quiet machine (N <= 1) the
    target is the bound itself."""
    return STARTUP_TARGET_SECONDS * max(1.0, c.startup_load_per_cpu)


def test_startup_time(ha: Cluster, cluster: Cluster) -> None:
    # The target: a cold start of either shape takes 4-6 s on the quiet 2-core machine (benchmarks/
    # test_suite_workers.md); 20 s leaves room for a busy one and still catches a start-up waiting on a
    # timer (a backoff, a request timeout) instead of on work. Under load the bound grows with the run
    # queue (startup_bound): 22 s at a load of 16-21 on 2 CPUs is the load's, not a regression's.
    for c in (cluster, ha):
        print(f"start-up: {len(c.control_planes)} control plane(s) {c.startup_seconds}s at a load of "
              f"{c.startup_load_per_cpu} per CPU: bound {startup_bound(c):.0f}s")
        assert 0 < c.startup_seconds < startup_bound(c)


def test_control_plane_mirror_pods(ha: Cluster) -> None:
    expected = sorted(f"{c}-cp-{i}" for i in (1, 2, 3)
                      for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"))

    def mirror_pods() -> list[dict[str, Any]]:
        items = get_json(ha, "-n", "kube-system", "pods", "-l", "tier=control-plane", version="1.33")["items"]
        return items if sorted(p["metadata"]["name"] for p in items) == expected else []

    pods = eventually(mirror_pods, what="the twelve control-plane mirror pods")
    members = {m.name: m for m in ha.members}
    for p in pods:
        if p["metadata"]["labels"]["component"] != "etcd":
            continue
        node = p["spec"]["nodeName"]
        command = p["spec"]["containers"][0]["command"]
        assert f"--listen-client-urls={members[node].client_url}" in command
        assert "--cert-file=/etc/kubernetes/pki/etcd/server.crt" in command
        assert f"--initial-cluster={','.join(f'{m.name}={m.peer_url}' for m in ha.members)}" in command
        volumes = {v["name"]: v["hostPath"] for v in p["spec"]["volumes"]}
        assert volumes == {"etcd-certs": {"path": "/etc/kubernetes/pki/etcd", "type": "DirectoryOrCreate"},
                           "etcd-data": {"path": "/var/lib/etcd", "type": "DirectoryOrCreate"}}
        assert p["spec"]["hostNetwork"] is True
        assert p["spec"]["priorityClassName"] == "system-node-critical"
    # The manifest on the node's host filesystem says the same.
    on_disk = (ha.layout.manifests("cp-2") / "etcd.yaml").read_text()
    assert f"--advertise-client-urls={members['cp-2'].client_url}" in on_disk


def test_member_stop_and_start(ha: Cluster) -> None:
    eventually(lambda: all(etcd_ready(ha, n) for n in ha.control_planes), what="all etcd pods Ready")
    ha.stop_member("cp-2")  # etcd.yaml moved out of cp-2's manifests: the kubelet stops the member
    try:
        assert not healthy(ha.members[1])
        eventually(lambda: etcd_ready(ha, "cp-2") is None, what="etcd-cp-2's mirror pod to go")
        # Quorum holds with 2 of 3: once they have a leader (/health says so; when cp-2 led, the others hand
        # the lead over or elect one, which a loaded machine stretches past the API server's storage
        # deadline: 504 Timeout, as a real API server answers while etcd does not), the API keeps working.
        rest = [m for m in ha.members if m.name != "cp-2"]
        eventually(lambda: all(healthy(m) for m in rest), what="cp-1 and cp-3 healthy (a leader among them)")
        assert ha.kubectl("get", "nodes", version="1.33").returncode == 0
    finally:
        ha.start_member("cp-2")
    eventually(lambda: etcd_ready(ha, "cp-2"), what="etcd-cp-2 Ready again")


def _exec_frames(cluster: Cluster, ns: str, pod: str, script: str, protocol: str) -> dict[int, bytes]:
    """Run an exec over a WebSocket offering only `protocol`; returns the bytes per channel."""
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", script), ("stdout", "true"),
                       ("stderr", "true")])
    url = f"wss://127.0.0.1:{cluster.state['server']['port']}/api/v1/namespaces/{ns}/pods/{pod}/exec?{query}"
    pki = cluster.layout.pki
    ws = websocket.create_connection(url, subprotocols=[protocol], timeout=30, sslopt={
        "ca_certs": str(pki / "ca.crt"), "certfile": str(pki / "admin.crt"), "keyfile": str(pki / "admin.key")})
    channels: dict[int, bytes] = {}
    try:
        assert ws.getsubprotocol() == protocol
        while True:
            try:
                frame = ws.recv()
            except websocket.WebSocketConnectionClosedException:
                break
            if not frame:
                break
            data = frame if isinstance(frame, bytes) else frame.encode()
            channels[data[0]] = channels.get(data[0], b"") + data[1:]
    finally:
        ws.close()
    return channels


def test_exec_protocols_restricted_to_v4(ha: Cluster) -> None:
    ns = "v4-only"
    ha.kubectl("create", "-f", "-", input=manifest(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bb", "namespace": ns},
         "spec": {"terminationGracePeriodSeconds": 1,
                  "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}),
        version="1.33")
    ha.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/bb", "--timeout=60s", version="1.33")
    channels = _exec_frames(ha, ns, "bb", "echo hello; exit 4", "v4.channel.k8s.io")
    assert channels[1] == b"hello\n"
    status = json.loads(channels[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}]
    # v5 is refused before anything runs.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _exec_frames(ha, ns, "bb", "echo never", "v5.channel.k8s.io")
    assert refused.value.status_code == 400
    # kubectl ≥ 1.30 offers only v5 over WebSocket, then falls back to SPDY, which this server does not
    # speak: against a v4-only server kubectl exec fails, as it would against a WebSocket-v4-only proxy.
    result = ha.kubectl("-n", ns, "exec", "bb", "--", "true", check=False, version="1.33")
    assert result.returncode != 0


def test_restart_keeps_state_and_down_stops_everything(ha: Cluster) -> None:
    ha.kubectl("create", "-f", "-", input=manifest(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "survivor", "namespace": "default"},
         "data": {"k": "v"}}), version="1.33")
    before = get_json(ha, "configmap", "survivor", version="1.33")
    ha.restart()
    after = get_json(ha, "configmap", "survivor", version="1.33")
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and after["data"] == {"k": "v"}
    nodes = get_json(ha, "nodes", version="1.33")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["cp-1", "cp-2", "cp-3", "worker-1"]

    pids = [ha.state["server"]["pid"]]
    ha.down()
    marker = str(ha.dir)
    leftovers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if any(marker in arg for arg in cmdline(pid))]
    assert leftovers == [], [cmdline(p) for p in leftovers]
    assert not any(Path(f"/proc/{pid}").exists() and cmdline(pid) for pid in pids)
    # The etcd members (sandboxed: their command lines name no host path) ended with their kubelet.
    assert not any(listening(m.client_port) or listening(m.peer_port) for m in ha.members)
    # Up again for whoever uses the shared cluster after this test.
    ha.start()


def test_status_command(ha: Cluster) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.cluster", "status", "--dir", str(ha.dir)],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["server"]["running"] and status["server"]["ready"]
    assert [(m["node"], m["manifest"], m["running"], m["healthy"]) for m in status["etcd"]] == [
        ("cp-1", True, True, True), ("cp-2", True, True, True), ("cp-3", True, True, True)]
    assert status["options"]["etcd_version"] == "3.5"


def test_registered_image_alias(cluster_factory: ClusterFactory) -> None:
    aliased = cluster_factory(control_planes=1, workers=1, images={"registry.example.com/tools:1.0": "busybox"})
    aliased.kubectl("create", "-f", "-", version="1.33", input=manifest(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tools", "namespace": "default"},
         "spec": {"terminationGracePeriodSeconds": 1, "containers": [
             {"name": "main", "image": "registry.example.com/tools:1.0", "command": ["sleep", "3600"]}]}}))
    aliased.kubectl("wait", "--for=condition=Ready", "pod/tools", "--timeout=60s", version="1.33")
    assert aliased.kubectl("exec", "tools", "--", "busybox", "true", version="1.33").returncode == 0
