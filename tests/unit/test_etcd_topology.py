"""Topology from kubeadm-style etcd static pods (the manifests the loopback cluster writes as kubeadm
does), and the etcdctl JSON parsing against what the real etcdctl 3.4 prints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kubectl_dr.errors import UsageError
from kubectl_dr.etcd import etcdctl, podspec
from kubectl_dr.etcd.errors import TopologyError
from kubectl_dr.etcd.topology import direct, member_from_pod, parse_flags
from tests.cluster.control.etcd_members import Member
from tests.cluster.control.static_pods import etcd_manifest, mirror_pod
from tests.unit.etcd_scratch import ETCDCTL, ScratchEtcd, etcd_available


def kubeadm_pod(node: str = "cp-1", **replace: str) -> dict:
    members = [Member("cp-1", 2379, 2380, 2381), Member("cp-2", 12379, 12380, 12381)]
    member = next(m for m in members if m.name == node)
    pod = mirror_pod(etcd_manifest(member, members, "3.4"), {"metadata": {"name": node, "uid": "u-1"}})
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def test_parse_flags_both_forms() -> None:
    assert parse_flags(["etcd", "--name=a", "--data-dir", "/x", "--flag", "--k=v=w"]) == {
        "name": "a", "data-dir": "/x", "flag": "true", "k": "v=w"}


def test_member_from_kubeadm_pod() -> None:
    m = member_from_pod(kubeadm_pod())
    assert (m.node, m.pod, m.name, m.ready) == ("cp-1", "etcd-cp-1", "cp-1", True)
    assert m.image == "registry.k8s.io/etcd:3.4.23-0"
    assert m.client_url == "https://127.0.0.1:2379"
    assert m.server_files == {"trusted-ca-file": "/etc/kubernetes/pki/etcd/ca.crt",
                              "cert-file": "/etc/kubernetes/pki/etcd/server.crt",
                              "key-file": "/etc/kubernetes/pki/etcd/server.key"}
    assert [(f.role, f.container_path, f.host_path) for f in m.client_files] == [
        ("ca", "/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/etcd/ca.crt"),
        ("cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt", "/etc/kubernetes/pki/etcd/healthcheck-client.crt"),
        ("key", "/etc/kubernetes/pki/etcd/healthcheck-client.key", "/etc/kubernetes/pki/etcd/healthcheck-client.key"),
    ]
    assert m.certs_volume == {"name": "etcd-certs", "hostPath": "/etc/kubernetes/pki/etcd",
                              "mountPath": "/etc/kubernetes/pki/etcd"}


def test_loopback_listener_preferred_and_host_path_mapped() -> None:
    pod = kubeadm_pod()
    container = pod["spec"]["containers"][0]
    container["command"] = [c for c in container["command"] if not c.startswith("--listen-client-urls")]
    container["command"].append("--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379")
    container["command"] = [c.replace("--advertise-client-urls=https://127.0.0.1:2379",
                                      "--advertise-client-urls=https://10.0.0.5:2379") for c in container["command"]]
    pod["spec"]["volumes"][0]["hostPath"]["path"] = "/srv/pki"
    m = member_from_pod(pod)
    assert m.client_url == "https://127.0.0.1:2379"
    assert m.advertise_client_urls == ("https://10.0.0.5:2379",)
    assert m.file("cert").host_path == "/srv/pki/healthcheck-client.crt"


def test_certificates_outside_host_path_volumes_are_refused() -> None:
    pod = kubeadm_pod()
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "etcd-certs"]
    with pytest.raises(TopologyError, match=r"no hostPath volume holds /etc/kubernetes/pki/etcd/ca\.crt"):
        member_from_pod(pod)


def test_snapshot_pod_is_pinned_and_mounts_files_read_only() -> None:
    m = member_from_pod(kubeadm_pod())
    pod = podspec.snapshot_pod(m, "kube-system", "busybox")
    spec = pod["spec"]
    assert spec["nodeName"] == "cp-1" and spec["hostNetwork"] is True
    assert {"operator": "Exists"} in spec["tolerations"]
    # The member's status and the save run beside the container that serves the file (it follows the save).
    assert "initContainers" not in spec  # no encryption config to copy first
    containers = {c["name"]: c for c in spec["containers"]}
    assert list(containers) == [*podspec.SNAPSHOT_JOBS, podspec.SERVE_CONTAINER]
    assert [containers[j]["image"] for j in podspec.SNAPSHOT_JOBS] == [m.image, m.image]
    assert all(c["imagePullPolicy"] == "IfNotPresent" for c in spec["containers"])
    assert containers[podspec.SERVE_CONTAINER]["image"] == "busybox"
    files = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    assert all(h["type"] == "File" for h in files.values())
    save = containers[podspec.SNAPSHOT_CONTAINER]
    mounts = [mt for mt in save["volumeMounts"] if mt["name"] in files]
    assert len(mounts) == 3 and all(mt["readOnly"] for mt in mounts)
    assert save["command"][-3:] == ["snapshot", "save", podspec.SNAPSHOT_FILE]
    copying = podspec.snapshot_pod(m, "kube-system", "busybox", encryption_config="/etc/kubernetes/enc/enc.yaml")
    assert [i["name"] for i in copying["spec"]["initContainers"]] == [podspec.ENCRYPTION_INIT]


def test_direct_flags_checked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    assert direct(["127.0.0.1:2379,https://b:2379"], str(ca), None, None).endpoints == (
        "https://127.0.0.1:2379", "https://b:2379")
    with pytest.raises(UsageError, match="--cert and --key go together"):
        direct(["https://a:2379"], str(ca), str(ca), None)
    with pytest.raises(UsageError, match="--cacert"):
        direct(["https://a:2379"], str(tmp_path / "missing"), None, None)


@pytest.mark.skipif(not etcd_available(), reason="needs /usr/bin/etcd and /usr/bin/etcdctl")
def test_parsing_real_etcdctl_output(tmp_path: Path) -> None:
    with ScratchEtcd(tmp_path, name="parse") as etcd:
        etcd.put(b"/a", b"1")
        dead = "http://127.0.0.1:1"
        _, members = etcdctl.parse_member_list(etcd.ctl("member", "list", "-w", "json").stdout)
        assert [(m.name, m.client_urls) for m in members] == [("parse", [etcd.endpoint])]
        both = f"{etcd.endpoint},{dead}"
        status = etcd.ctl("--endpoints", both, "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "status",
                          "-w", "json", check=False)
        health = etcd.ctl("--endpoints", both, "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health",
                          "-w", "json", check=False)
        rows = etcdctl.merge(etcdctl.parse_endpoint_status(status.stdout, status.stderr),
                             etcdctl.parse_endpoint_health(health.stdout), [etcd.endpoint, dead])
        assert rows[0].healthy and rows[0].version and rows[0].revision == 2 and rows[0].leader == rows[0].member_id
        assert not rows[1].healthy and rows[1].error
        raw = json.loads(status.stdout)[0]["Status"]
        assert rows[0].db_size == raw["dbSize"] and rows[0].member_id == f"{raw['header']['member_id']:x}"
        assert etcdctl.parse_alarm_list(etcd.ctl("alarm", "list", "-w", "json").stdout) == []
    assert ETCDCTL


def test_member_list_keeps_learners_and_unstarted() -> None:
    data = {"header": {"cluster_id": 255}, "members": [
        {"ID": 16, "name": "a", "peerURLs": ["p"], "clientURLs": ["c"]},
        {"ID": 17, "peerURLs": ["q"], "isLearner": True}]}
    cluster, members = etcdctl.parse_member_list(json.dumps(data))
    assert cluster == "ff"
    assert [(m.id, m.name, m.is_learner, m.client_urls) for m in members] == [("10", "a", False, ["c"]),
                                                                           ("11", "", True, [])]
    assert copy.deepcopy(members[0]).to_dict()["peerURLs"] == ["p"]


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ('"error":"rpc error: code = DeadlineExceeded desc = latest balancer error: use of closed network '
         'connection"}\nFailed to get the status of endpoint https://127.0.0.1:2379 (context deadline exceeded)',
         "certificate"),
        ("transport: authentication handshake failed: remote error: tls: bad certificate", "certificate"),
        ("read: connection reset by peer", "certificate"),
        ('"error":"rpc error: code = Unavailable desc = connection error: desc = \\"transport: Error while dialing '
         'dial tcp 127.0.0.1:2379: connect: connection refused\\""}\ncontext deadline exceeded', "unreachable"),
        ("Failed to get the status of endpoint https://127.0.0.1:2379 (context deadline exceeded)", "unreachable"),
        ("something else entirely", None),
    ],
)
def test_why_etcdctl_got_no_answer(log: str, reason: str | None) -> None:
    from kubectl_dr.etcd.etcdctl import snapshot_error_reason

    assert snapshot_error_reason(log) == reason
