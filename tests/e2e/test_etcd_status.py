"""`kubectl dr etcd status` compared with the real etcdctl run directly against the members, and the
behaviour with one member down or unusable (3 control-plane nodes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cluster.fixture import Cluster
from tests.e2e.test_etcd_snapshot import (
    assert_matches_etcdctl,
    certs,
    etcdctl,
    leftover_pods,
    member_endpoints,
    ok_json,
    run_dr,
)


def etcdctl_view(c: Cluster) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    members = json.loads(etcdctl(c, "member", "list", "-w", "json").stdout)
    status = {s["Endpoint"]: s["Status"] for s in json.loads(etcdctl(c, "endpoint", "status", "-w", "json",
                                                                      check=False).stdout)}
    health = {h["endpoint"]: h for h in json.loads(etcdctl(c, "endpoint", "health", "-w", "json",
                                                           check=False).stdout)}
    return members, status, health


def status_checked(c: Cluster, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Ours, taken between two etcdctl views, and checked against both."""
    view = etcdctl_view(c)
    data: dict[str, Any] = ok_json(run_dr(c, tmp_path, "etcd", "status", *args, "-o", "json"))
    check_agrees(data, c, view)
    return data


def check_agrees(data: dict[str, Any], c: Cluster, view: tuple[dict[str, Any], ...]) -> None:
    members, before, health = view
    assert data["clusterID"] == f"{members['header']['cluster_id']:x}"
    ours = {(m["id"], m["name"], tuple(m["peerURLs"]), tuple(m["clientURLs"]), m["isLearner"]) for m in data["members"]}
    theirs = {(f"{m['ID']:x}", m["name"], tuple(m["peerURLs"]), tuple(m["clientURLs"]), bool(m.get("isLearner")))
              for m in members["members"]}
    assert ours == theirs
    _, after, _ = etcdctl_view(c)
    leader = {f"{s['leader']:x}" for s in after.values()}
    assert {data["leader"]} == leader
    assert [m["name"] for m in data["members"] if m["isLeader"]] == [
        m["name"] for m in members["members"] if f"{m['ID']:x}" == data["leader"]]
    rows = {r["endpoint"]: r for r in data["endpoints"]}
    assert set(rows) == set(member_endpoints(c))
    for endpoint, row in rows.items():
        assert row["healthy"] is health[endpoint]["health"] is True
        first, last = before[endpoint], after[endpoint]
        assert row["memberID"] == f"{first['header']['member_id']:x}"
        assert row["version"] == first["version"]
        assert row["raftTerm"] == first["raftTerm"] == last["raftTerm"]
        # The API server keeps writing (leases, events): ours was taken between the two etcdctl runs.
        assert first["header"]["revision"] <= row["revision"] <= last["header"]["revision"]
        assert first["raftIndex"] <= row["raftIndex"] <= last["raftIndex"]
        assert row["dbSize"] > 0 and row["dbSizeInUse"] > 0
        assert row["isLeader"] == (row["memberID"] == data["leader"])


def test_status_agrees_with_etcdctl_pod_and_direct(cluster_factory: Any, tmp_path: Path) -> None:
    c = cluster_factory(control_planes=3)
    data = status_checked(c, tmp_path)
    assert data["mode"] == "pod" and data["via"] in c.control_planes
    ca, cert, key = certs(c, "cp-3")
    direct = status_checked(c, tmp_path, "--endpoints", ",".join(member_endpoints(c)),
                            "--cacert", str(ca), "--cert", str(cert), "--key", str(key))
    assert direct["mode"] == "direct"
    table = run_dr(c, tmp_path, "etcd", "status")
    assert table.returncode == 0 and "LEADER" in table.stdout and table.stdout.count("healthy") == 3
    assert leftover_pods(c) == []


def test_one_member_stopped(cluster_factory: Any, tmp_path: Path) -> None:
    c = cluster_factory(control_planes=3)
    c.stop_member("cp-3")
    try:
        data = ok_json(run_dr(c, tmp_path, "etcd", "status", "-o", "json"))
        rows = {r["member"]: r for r in data["endpoints"]}
        assert not rows["cp-3"]["healthy"] and rows["cp-3"]["error"]
        assert rows["cp-1"]["healthy"] and rows["cp-2"]["healthy"]
        assert len(data["members"]) == 3
        snap = ok_json(run_dr(c, tmp_path / "repo", "etcd", "snapshot", "-o", "json"))
        assert snap["details"]["member"]["node"] != "cp-3"
        assert_matches_etcdctl(snap)
        pinned = run_dr(c, tmp_path / "repo", "etcd", "snapshot", "--node", "cp-3")
        assert pinned.returncode == 1
        # stop_member moves etcd.yaml out of cp-3's manifests, as on a kubeadm node: no static pod there.
        assert 'node "cp-3" runs no etcd static pod' in pinned.stderr
        assert leftover_pods(c) == []
    finally:
        c.start_member("cp-3")


def test_member_without_client_certificate_is_skipped(cluster_factory: Any, tmp_path: Path) -> None:
    c = cluster_factory(control_planes=3)
    _, cert, _ = certs(c, "cp-1")
    hidden = cert.with_suffix(".hidden")
    cert.rename(hidden)
    try:
        snap = run_dr(c, tmp_path / "repo", "etcd", "snapshot", "-o", "json")
        data = ok_json(snap)
        assert data["details"]["member"]["node"] == "cp-2"
        assert "no snapshot from node cp-1: certificate file /etc/kubernetes/pki/etcd/healthcheck-client.crt " \
               "is missing on node cp-1" in snap.stderr
        pinned = run_dr(c, tmp_path / "repo", "etcd", "snapshot", "--node", "cp-1")
        assert pinned.returncode == 1
        assert "error: certificate file /etc/kubernetes/pki/etcd/healthcheck-client.crt is missing on node cp-1" \
            in pinned.stderr
        assert "kubeadm init phase certs etcd-healthcheck-client" in pinned.stderr
        assert leftover_pods(c) == []
    finally:
        hidden.rename(cert)


def test_status_with_quorum_lost(cluster_factory: Any, tmp_path: Path) -> None:
    """2 of 3 members down: the API server cannot answer, so the pod path says how to ask directly, and
    asking directly gives a row per member at once — the survivor's revision and term, and no leader."""
    import time

    c = cluster_factory(control_planes=3)
    c.stop_member("cp-2")
    c.stop_member("cp-3")
    try:
        through_api = run_dr(c, tmp_path, "etcd", "status")
        assert through_api.returncode == 1
        assert "kubectl dr etcd status --endpoints" in through_api.stderr
        ca, cert, key = certs(c, "cp-1")
        start = time.monotonic()
        direct = run_dr(c, tmp_path, "etcd", "status", "--endpoints", ",".join(member_endpoints(c)),
                        "--cacert", str(ca), "--cert", str(cert), "--key", str(key), "-o", "json")
        took = time.monotonic() - start
        data = ok_json(direct)
        rows = {r["member"]: r for r in data["endpoints"]}
        survivor = rows["cp-1"]
        assert survivor["version"] and survivor["revision"] > 0 and survivor["raftTerm"] > 0
        assert survivor["leader"] is None and "no leader" in ",".join(survivor["errors"])
        assert not survivor["healthy"] and "quorum" in survivor["error"]
        assert [rows[n]["version"] for n in ("cp-2", "cp-3")] == [None, None]
        assert all(rows[n]["error"] for n in ("cp-2", "cp-3"))
        assert len(data["members"]) == 3, "the member list is the survivor's own"
        assert took < 15, took  # within the request timeout, all endpoints at once
        table = run_dr(c, tmp_path, "etcd", "status", "--endpoints", ",".join(member_endpoints(c)),
                       "--cacert", str(ca), "--cert", str(cert), "--key", str(key))
        assert table.returncode == 0 and " none " in table.stdout
    finally:
        c.start_member("cp-2")
        c.start_member("cp-3")
