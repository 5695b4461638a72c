"""The `local-path` StorageClass (WaitForFirstConsumer, node-bound volumes) as real kubectl sees it: the
claim waits for its first consumer, the scheduler picks the node, the volume lives on that node and
pins every later pod of the claim there; a pod that names its node itself never gets the claim bound."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.fixture import Cluster
from tests.conformance.kube import CONTROL_PLANE_TOLERATION, events_for, get_json, manifest, pod
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
VERSION = "1.33"


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = "local-path"
    cluster.kubectl("create", "namespace", name, version=VERSION)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", version=VERSION, check=False)


def claim(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def user_pod(name: str, ns: str, claim_name: str, script: str, **spec: Any) -> dict[str, Any]:
    return pod(name, ns, command=["sh", "-c", script], securityContext={"runAsUser": 1000, "fsGroup": 1000},
               volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
               volumeMounts=[{"name": "data", "mountPath": "/data"}], **spec)


def reasons(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    return {e["reason"]: e["message"] for e in events_for(cluster, ns, name, version=VERSION)}


def test_class_is_there(cluster: Cluster) -> None:
    cls = get_json(cluster, "storageclass", "local-path", version=VERSION)
    assert cls["provisioner"] == "rancher.io/local-path"
    assert cls["volumeBindingMode"] == "WaitForFirstConsumer" and cls["reclaimPolicy"] == "Delete"
    table = cluster.kubectl("get", "storageclass", version=VERSION).stdout
    assert "standard (default)" in table and "local-path" in table


def test_first_consumer_binds_the_claim_to_its_node(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(claim("data", ns)))
    waiting = eventually(lambda: reasons(cluster, ns, "data").get("WaitForFirstConsumer"),
                         what="the WaitForFirstConsumer event")
    assert waiting == "waiting for first consumer to be created before binding"
    assert get_json(cluster, "-n", ns, "pvc", "data", version=VERSION)["status"]["phase"] == "Pending"

    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        user_pod("writer", ns, "data", "echo hello > /data/greeting; sleep 3600")))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/writer", "--timeout=60s", version=VERSION)
    node = get_json(cluster, "-n", ns, "pod", "writer", version=VERSION)["spec"]["nodeName"]
    pvc = get_json(cluster, "-n", ns, "pvc", "data", version=VERSION)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    pv = get_json(cluster, "pv", pvc["spec"]["volumeName"], version=VERSION)
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"] == [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]
    path = pv["spec"]["hostPath"]["path"]
    assert path == f"/opt/local-path-provisioner/{pv['metadata']['name']}_{ns}_data"
    succeeded = reasons(cluster, ns, "data")["ProvisioningSucceeded"]
    assert succeeded == f"Successfully provisioned volume {pv['metadata']['name']}"
    # The data is on that node's host filesystem, written by the app's uid.
    greeting = cluster.layout.host_path(node, path) / "greeting"
    assert greeting.read_text() == "hello\n" and greeting.stat().st_uid == 1000


def test_a_pod_elsewhere_cannot_use_the_claim(cluster: Cluster, ns: str) -> None:
    node = get_json(cluster, "-n", ns, "pod", "writer", version=VERSION)["spec"]["nodeName"]
    other = next(n for n in [*cluster.control_planes, *cluster.workers] if n != node)
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        user_pod("elsewhere", ns, "data", "cat /data/greeting", nodeSelector={"kubernetes.io/hostname": other},
                 tolerations=[CONTROL_PLANE_TOLERATION])))
    total = len(cluster.control_planes) + len(cluster.workers)
    failed = eventually(lambda: reasons(cluster, ns, "elsewhere").get("FailedScheduling"),
                        what="FailedScheduling of the pod pinned to another node")
    assert failed == (
        f"0/{total} nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        f"1 node(s) had volume node affinity conflict. preemption: 0/{total} nodes are available: "
        f"{total} Preemption is not helpful for scheduling.")
    status = get_json(cluster, "-n", ns, "pod", "elsewhere", version=VERSION)["status"]
    assert status["phase"] == "Pending"
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("PodScheduled", "False", "Unschedulable")]
    # A later pod without a pin lands on the volume's node and reads what the first one wrote.
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        user_pod("reader", ns, "data", "cat /data/greeting", restartPolicy="Never")))
    eventually(lambda: get_json(cluster, "-n", ns, "pod", "reader", version=VERSION)["status"]["phase"]
               == "Succeeded", what="the reader pod to succeed")
    assert get_json(cluster, "-n", ns, "pod", "reader", version=VERSION)["spec"]["nodeName"] == node
    assert cluster.kubectl("-n", ns, "logs", "reader", version=VERSION).stdout == "hello\n"


def test_node_name_on_an_unbound_claim_never_binds_it(cluster: Cluster, ns: str) -> None:
    # The scheduler never sees a pod that names its node: nothing selects a node for the claim, so it stays
    # Pending and the kubelet cannot process the volume (its FailedMount text, repeated on every sync).
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        claim("direct", ns), user_pod("direct", ns, "direct", "sleep 3600", nodeName=cluster.workers[0])))
    failed = eventually(lambda: reasons(cluster, ns, "direct").get("FailedMount"), what="FailedMount")
    assert failed == (
        "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[], "
        f"failed to process volumes=[data]: error processing PVC {ns}/direct: PVC is not bound")
    pod_status = get_json(cluster, "-n", ns, "pod", "direct", version=VERSION)["status"]
    assert pod_status["phase"] == "Pending"
    assert pod_status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    pvc = get_json(cluster, "-n", ns, "pvc", "direct", version=VERSION)
    assert pvc["status"]["phase"] == "Pending"
    assert "volume.kubernetes.io/selected-node" not in (pvc["metadata"].get("annotations") or {})
    assert reasons(cluster, ns, "direct")["WaitForFirstConsumer"] == (
        "waiting for first consumer to be created before binding")


def test_deleting_the_claim_removes_the_node_directory(cluster: Cluster, ns: str) -> None:
    pvc = get_json(cluster, "-n", ns, "pvc", "data", version=VERSION)
    pv = get_json(cluster, "pv", pvc["spec"]["volumeName"], version=VERSION)
    node = pv["metadata"]["annotations"]["local.path.provisioner/selected-node"]
    host = cluster.layout.host_path(node, pv["spec"]["hostPath"]["path"])
    cluster.kubectl("-n", ns, "delete", "pod", "writer", "reader", "elsewhere", "--wait=true", version=VERSION)
    cluster.kubectl("-n", ns, "delete", "pvc", "data", version=VERSION)
    eventually(lambda: cluster.kubectl("get", "pv", pv["metadata"]["name"], check=False,
                                       version=VERSION).returncode != 0, what="the PV to be reclaimed")
    assert not host.exists()
