"""Every helper pod comes from one builder (kube/pods.py): the safety every one of them needs is held there once."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_dr.etcd import podspec
from kubectl_dr.etcd.restore import nodepod
from kubectl_dr.etcd.restore.targets import Target
from kubectl_dr.etcd.topology import member_from_pod
from kubectl_dr.kube import pods
from kubectl_dr.nodes import hostpod, kubelet_restart
from kubectl_dr.runs import Run
from kubectl_dr.schedules import node_snapshots
from tests.unit.test_etcd_topology import kubeadm_pod

RUN = Run("etcd restore --from latest")


def _target() -> Target:
    member = member_from_pod(kubeadm_pod())
    return Target(member=member, peer_urls=("https://10.0.0.1:2380",), data_dir="/var/lib/etcd",
                  data_dir_in_pod="/var/lib/etcd", metrics_url="http://127.0.0.1:2381",
                  readyz_url="https://10.0.0.1:6443/readyz", initial_cluster="cp-1=https://10.0.0.1:2380")


MANIFESTS: dict[str, Any] = {
    "host pod": lambda: hostpod.manifest("cp-1", "kube-system", [hostpod.HostMount("/etc/kubernetes")],
                                         image="busybox", purpose="controlplane-backup", run=RUN, lease=None),
    "restore node pod": lambda: nodepod.manifest(_target(), "kube-system", "busybox", RUN, "/var/lib/kubectl-dr",
                                                 "/etc/kubernetes", "etcd-restore"),
    "etcdctl image pod": lambda: nodepod.image_pod(_target(), "kube-system", "registry.k8s.io/etcd:3.5.16-0", RUN,
                                                  "version", ["etcdctl", "version"], []),
    "kubelet restart": lambda: kubelet_restart._manifest("cp-1", "kube-system", "busybox", RUN),
    "etcd snapshot": lambda: podspec.snapshot_pod(member_from_pod(kubeadm_pod()), "kube-system", "busybox", RUN),
    "etcd status": lambda: podspec.status_pod(member_from_pod(kubeadm_pod()), "kube-system", RUN),
    "node snapshots reader": lambda: node_snapshots.reader_pod("cp-1", "/var/lib/etcd-snapshots", "kube-system",
                                                               RUN, "busybox"),
}


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_every_helper_pod_is_ours_pinned_bounded_and_tokenless(kind: str) -> None:
    pod = MANIFESTS[kind]()
    meta, spec = pod["metadata"], pod["spec"]
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert meta["labels"][pods.LABEL_MANAGED] == pods.MANAGED_BY and meta["labels"][pods.LABEL_PURPOSE]
    assert {k: v for k, v in meta["labels"].items() if k in RUN.labels()} == RUN.labels()
    assert len(meta["name"]) <= 63 and meta["namespace"] == "kube-system"
    assert spec["nodeName"] == "cp-1" and spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never" and spec["terminationGracePeriodSeconds"] == 1
    assert 0 < spec["activeDeadlineSeconds"] <= 4 * 3600  # ends by itself after a killed run
    assert spec["containers"] and all(c["imagePullPolicy"] == "IfNotPresent" for c in spec["containers"])
    names = {v["name"] for v in spec["volumes"]}
    for container in spec["containers"] + spec.get("initContainers", []):
        assert {m["name"] for m in container.get("volumeMounts", [])} <= names


def test_an_unpinned_pod_tolerates_nothing_and_extra_fields_go_into_the_spec() -> None:
    pod = pods.pod_manifest("dr-x-abc", "shop", purpose="pvc-backup", containers=[{"name": "c", "image": "busybox"}],
                            hostNetwork=True)
    assert "nodeName" not in pod["spec"] and "tolerations" not in pod["spec"]
    assert "activeDeadlineSeconds" not in pod["spec"] and pod["spec"]["hostNetwork"] is True
    assert pod["metadata"]["labels"] == pods.managed_labels("pvc-backup") and pod["metadata"]["annotations"] == {}
