"""Opt-in (`pytest --kubeconfig PATH`): the conformance expectations this suite holds the loopback cluster
to, checked against a real cluster, so the two can be compared side by side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster.fixture import KUBECTL_VERSIONS, kubectl_path

pytestmark = [pytest.mark.real_cluster]


def run(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kubectl_path(KUBECTL_VERSIONS[-1])), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=120)


def test_nodes_table_and_control_plane_taint(real_kubeconfig: Path) -> None:
    table = run(real_kubeconfig, "get", "nodes")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    nodes = json.loads(run(real_kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        if "node-role.kubernetes.io/control-plane" in node["metadata"].get("labels", {}):
            taints = node["spec"].get("taints") or []
            assert all(t["key"] != "node-role.kubernetes.io/control-plane" or t["effect"] == "NoSchedule"
                       for t in taints)


def test_kubeadm_etcd_mirror_pods(real_kubeconfig: Path) -> None:
    pods = json.loads(run(real_kubeconfig, "-n", "kube-system", "get", "pods", "-l", "component=etcd",
                          "-o", "json").stdout)["items"]
    if not pods:
        pytest.skip("no kubeadm-style etcd pods in this cluster (managed control plane)")
    for pod in pods:
        assert pod["metadata"]["annotations"]["kubernetes.io/config.mirror"]
        assert pod["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"]
        names = {v["name"] for v in pod["spec"]["volumes"]}
        assert {"etcd-certs", "etcd-data"} <= names
