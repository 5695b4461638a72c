"""The loopback's Rook-Ceph shape: Rook's objects, a real three-mon quorum, mons taken away and back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.fixture import Cluster, ClusterFactory
from tests.polling import eventually


@pytest.fixture(scope="module")
def rook(cluster_factory: ClusterFactory) -> Cluster:
    # Two workers: the mons spread over them; and a cluster of its own, apart from the e2e tests' one, which
    # leaves a quorum of one behind.
    return cluster_factory(control_planes=1, workers=2, rook_ceph=3)


def _get(c: Cluster, *args: str) -> Any:
    return json.loads(c.kubectl("-n", "rook-ceph", "get", *args, "-o", "json").stdout)


def _quorum_names(status: dict[str, Any]) -> list[str]:
    return sorted(status["monmap"]["mons"][rank]["name"] for rank in status["quorum"])


def test_objects_as_rook_makes_them_and_a_real_quorum(rook: Cluster) -> None:
    deployments = {d["metadata"]["name"]: d for d in _get(rook, "deployments")["items"]}
    assert set(deployments) == {"rook-ceph-operator", "rook-ceph-mon-a", "rook-ceph-mon-b", "rook-ceph-mon-c"}
    mon_a = deployments["rook-ceph-mon-a"]
    assert mon_a["metadata"]["labels"]["app"] == "rook-ceph-mon"
    assert mon_a["metadata"]["labels"]["ceph_daemon_id"] == "a"
    pod_spec = mon_a["spec"]["template"]["spec"]
    assert pod_spec["hostNetwork"] is True
    assert pod_spec["nodeSelector"] == {"kubernetes.io/hostname": "worker-1"}
    assert deployments["rook-ceph-mon-b"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/hostname": "worker-2"}
    container = pod_spec["containers"][0]
    assert container["name"] == "mon" and container["command"] == ["ceph-mon"]
    assert "--mon-host=$(ROOK_CEPH_MON_HOST)" in container["args"]
    endpoints = _get(rook, "configmap", "rook-ceph-mon-endpoints")["data"]
    assert [e.split("=")[0] for e in endpoints["data"].split(",")] == ["a", "b", "c"]
    assert endpoints["maxMonId"] == "2"
    secrets = {s["metadata"]["name"] for s in _get(rook, "secrets")["items"]}
    assert {"rook-ceph-config", "rook-ceph-mon", "rook-ceph-admin-keyring", "rook-ceph-mons-keyring"} <= secrets
    for mon_id in "abc":
        status = rook.mon_status(mon_id)
        assert status is not None and status["state"] in ("leader", "peon")
        assert _quorum_names(status) == ["a", "b", "c"]
    # The admin socket answers through the API too, as the product reads it (kubectl exec into the mon).
    out = rook.kubectl("-n", "rook-ceph", "exec", "deploy/rook-ceph-mon-a", "-c", "mon", "--",
                       "ceph", "--admin-daemon", "/run/ceph/ceph-mon.a.asok", "mon_status").stdout
    assert json.loads(out)["name"] == "a"


def test_a_stopped_mon_crash_loops_and_comes_back_with_its_store(rook: Cluster) -> None:
    before = sorted(p.name for p in rook.mon_store("c").iterdir())
    rook.stop_mon("c")
    assert rook.mon_status("c") is None
    assert not any(rook.mon_store("c").iterdir())
    eventually(lambda: _get(rook, "pods", "-l", "mon=c")["items"][0]["status"]["containerStatuses"][0]
               ["restartCount"] >= 1, 60, "the kubelet to restart mon c")
    assert rook.mon_status("c") is None  # no store: every restart fails
    rook.start_mon("c")
    assert sorted(p.name for p in rook.mon_store("c").iterdir()) == before

    def rejoined() -> bool:
        status = rook.mon_status("c")
        return bool(status) and _quorum_names(status) == ["a", "b", "c"]

    eventually(rejoined, 90, "mon c to rejoin the quorum", interval=0.5, explain=lambda: str(rook.mon_status("c")))
