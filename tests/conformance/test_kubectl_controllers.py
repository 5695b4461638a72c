"""Real kubectl against the loopback cluster: Jobs, DaemonSets, garbage collection, ReadWriteOncePod and
volume reclaim, as kubectl and kubectl-dr observe them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.fixture import KUBECTL_VERSIONS, Cluster
from tests.conformance.kube import BUSYBOX, CONTROL_PLANE_TOLERATION, get_json, manifest, pod
from tests.polling import eventually

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", params=KUBECTL_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ns(cluster: Cluster, version: str) -> Iterator[str]:
    name = f"ctl-{version.replace('.', '')}"
    cluster.kubectl("create", "-f", "-", version=version, input=manifest(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", version=version, check=False)


def apply(cluster: Cluster, version: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=manifest(*docs), version=version)


def job(name: str, ns: str, script: str, **spec: object) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                                   "containers": [{"name": "main", "image": BUSYBOX,
                                                                   "command": ["sh", "-c", script]}]}}}}


def wait_ready(cluster: Cluster, version: str, ns: str, selector: str, count: int) -> None:
    # `kubectl wait -l` fails at once when nothing matches yet: first wait for the pods to exist.
    eventually(lambda: len(get_json(cluster, "-n", ns, "pods", "-l", selector, version=version)["items"]) == count,
               what=f"{count} pods matching {selector}")
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod", "-l", selector, "--timeout=60s",
                    version=version)


def test_job_completes(cluster: Cluster, version: str, ns: str) -> None:
    apply(cluster, version, job("ok", ns, "echo done", completions=2, parallelism=2))
    out = cluster.kubectl("-n", ns, "wait", "--for=condition=complete", "job/ok", "--timeout=90s",
                          version=version).stdout
    assert out.strip() == "job.batch/ok condition met"
    status = get_json(cluster, "-n", ns, "job", "ok", version=version)["status"]
    assert status["succeeded"] == 2 and "failed" not in status and status["completionTime"]
    pods = get_json(cluster, "-n", ns, "pods", "-l", "job-name=ok", version=version)["items"]
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    assert cluster.kubectl("-n", ns, "logs", "job/ok", version=version).stdout == "done\n"


def test_job_fails_after_backoff_limit(cluster: Cluster, version: str, ns: str) -> None:
    apply(cluster, version, job("bad", ns, "exit 1", backoffLimit=1))
    cluster.kubectl("-n", ns, "wait", "--for=condition=failed", "job/bad", "--timeout=120s", version=version)
    status = get_json(cluster, "-n", ns, "job", "bad", version=version)["status"]
    assert status["failed"] == 2
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded",
                                                     "Job has reached the specified backoff limit")


def test_daemonset_one_pod_per_schedulable_node(cluster: Cluster, version: str, ns: str) -> None:
    labels = {"app": "agent"}
    apply(cluster, version, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}}})
    out = cluster.kubectl("-n", ns, "rollout", "status", "daemonset/agent", "--timeout=90s",
                          version=version).stdout
    assert out.strip().endswith('daemon set "agent" successfully rolled out')
    pods = get_json(cluster, "-n", ns, "pods", "-l", "app=agent", version=version)["items"]
    # The control-plane node is tainted and the template does not tolerate it.
    assert [p["spec"]["nodeName"] for p in pods] == ["worker-1"]


def test_delete_cascades_in_background(cluster: Cluster, version: str, ns: str) -> None:
    labels = {"app": "gc"}
    apply(cluster, version, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "gc", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}}})
    wait_ready(cluster, version, ns, "app=gc", 2)
    cluster.kubectl("-n", ns, "delete", "replicaset", "gc", version=version)
    cluster.kubectl("-n", ns, "wait", "--for=delete", "pod", "-l", "app=gc", "--timeout=60s", version=version)


def test_delete_cascade_orphan_keeps_dependents(cluster: Cluster, version: str, ns: str) -> None:
    labels = {"app": "orphans"}
    apply(cluster, version, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "orphans", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}}})
    wait_ready(cluster, version, ns, "app=orphans", 1)
    cluster.kubectl("-n", ns, "delete", "replicaset", "orphans", "--cascade=orphan", version=version)
    cluster.kubectl("-n", ns, "wait", "--for=delete", "replicaset/orphans", "--timeout=30s", version=version)
    time.sleep(4)  # more than a garbage-collector pass
    pods = get_json(cluster, "-n", ns, "pods", "-l", "app=orphans", version=version)["items"]
    assert len(pods) == 1 and not pods[0]["metadata"].get("ownerReferences")


def test_delete_cascade_foreground_removes_dependents_first(cluster: Cluster, version: str, ns: str) -> None:
    labels = {"app": "fg"}
    apply(cluster, version, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "fg", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}}})
    wait_ready(cluster, version, ns, "app=fg", 1)
    cluster.kubectl("-n", ns, "delete", "replicaset", "fg", "--cascade=foreground", "--wait=false",
                    version=version)
    rs = get_json(cluster, "-n", ns, "replicaset", "fg", version=version)
    assert rs["metadata"]["finalizers"] == ["foregroundDeletion"] and rs["metadata"]["deletionTimestamp"]
    cluster.kubectl("-n", ns, "wait", "--for=delete", "replicaset/fg", "--timeout=60s", version=version)
    assert get_json(cluster, "-n", ns, "pods", "-l", "app=fg", version=version)["items"] == []


def test_read_write_once_pod_claim_admits_one_pod(cluster: Cluster, version: str, ns: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "rwop", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Gi"}}}}
    volume = [{"name": "v", "persistentVolumeClaim": {"claimName": "rwop"}}]
    apply(cluster, version, claim, pod("owner", ns, volumes=volume))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/owner", "--timeout=60s", version=version)
    apply(cluster, version, pod("intruder", ns, volumes=volume, tolerations=[CONTROL_PLANE_TOLERATION]))

    def condition() -> dict[str, str] | None:
        status = get_json(cluster, "-n", ns, "pod", "intruder", version=version)["status"]
        return next((c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"), None)

    cond = eventually(condition, what="PodScheduled on the second RWOP pod")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == (
        "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and "
        "ReadWriteOncePod access mode. preemption: 0/2 nodes are available: 2 No preemption victims found "
        "for incoming pod.")


def test_deleting_claim_reclaims_volume(cluster: Cluster, version: str, ns: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "gone", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}
    apply(cluster, version, claim)
    cluster.kubectl("-n", ns, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/gone", "--timeout=60s",
                    version=version)
    pvc = get_json(cluster, "-n", ns, "pvc", "gone", version=version)
    pv = get_json(cluster, "pv", pvc["spec"]["volumeName"], version=version)
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["capacity"] == {"storage": "2Gi"} and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    host = Path(pv["spec"]["hostPath"]["path"])
    assert host == cluster.layout.storage / f"pv-{pvc['metadata']['uid']}" and host.is_dir()
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    cluster.kubectl("-n", ns, "delete", "pvc", "gone", version=version)
    cluster.kubectl("wait", "--for=delete", f"pv/{pv['metadata']['name']}", "--timeout=60s", version=version)
    assert not host.exists()
