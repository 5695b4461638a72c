"""The product's exec layer and helper-pod lifecycle against the loopback cluster (v5 and v4-only)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kubectl_dr import cleanup
from kubectl_dr.errors import ApiError, DrError, VerificationError
from kubectl_dr.kube import kubeconfig, pods
from kubectl_dr.kube.client import Kube, connect
from kubectl_dr.kube.exec import V4, V5, bounded_input, open_exec
from tests.cluster.fixture import Cluster, ClusterFactory


def kube_for(cluster: Cluster) -> Kube:
    return connect(kubeconfig.resolve(kubeconfig.Overrides(kubeconfig=str(cluster.kubeconfig))))


def busybox_pod(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pods.pod_name("dr-test", "exec"), "namespace": namespace,
                     "labels": pods.managed_labels("test")},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}], **spec},
    }


def create_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("create", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")


@pytest.fixture()
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"exec-{uuid.uuid4().hex[:6]}"
    create_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def running_pod(kube: Kube, namespace: str) -> pods.HelperPod:
    pod = pods.create(kube, busybox_pod(namespace), what="test")
    pods.wait_running(pod)
    return pod


def test_v5_download_upload_and_exit_codes(cluster: Cluster, namespace: str) -> None:
    kube = kube_for(cluster)
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, namespace)
        size = 24 * 1024 * 1024 + 7
        stream = open_exec(kube, namespace, pod.name, ["sh", "-c", f"head -c {size} /dev/urandom | tee /tmp/blob"])
        assert stream.protocol == V5
        digest = hashlib.sha256()
        received = [0]

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            received[0] += len(chunk)

        result = stream.run(stdout=sink)
        result.check("download")
        assert received[0] == size
        remote = open_exec(kube, namespace, pod.name, ["sha256sum", "/tmp/blob"])
        out: list[bytes] = []
        remote.run(stdout=out.append).check("sha256sum")
        assert b"".join(out).split()[0].decode() == digest.hexdigest()

        payload = os.urandom(5 * 1024 * 1024 + 3)
        upload = open_exec(kube, namespace, pod.name, bounded_input(["sha256sum"], len(payload)), stdin=True)
        answer: list[bytes] = []
        upload.run(stdin=[payload[i : i + 1_000_000] for i in range(0, len(payload), 1_000_000)],
                   stdout=answer.append).check("upload")
        assert b"".join(answer).split()[0].decode() == hashlib.sha256(payload).hexdigest()

        failing = open_exec(kube, namespace, pod.name, ["sh", "-c", "echo oops >&2; exit 7"])
        outcome = failing.run()
        assert (outcome.exit_code, outcome.stderr) == (7, b"oops\n")
        with pytest.raises(VerificationError, match="exited with code 7"):
            outcome.check("the step")
        pod.delete()


def test_v5_closes_stdin_without_head(cluster: Cluster, namespace: str) -> None:
    kube = kube_for(cluster)
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, namespace)
        stream = open_exec(kube, namespace, pod.name, ["wc", "-c"], stdin=True)
        out: list[bytes] = []
        # `wc` only prints once stdin reaches end-of-file: proves channel 255 closed it.
        stream.run(stdin=[b"x" * 1000, b"y" * 234], stdout=out.append).check("wc")
        assert b"".join(out).strip() == b"1234"
        pod.delete()


def test_v4_only_server_negotiates_v4_and_bounded_input_works(cluster_factory: ClusterFactory) -> None:
    v4 = cluster_factory(control_planes=1, workers=1, exec_protocols=("v4",))
    kube = kube_for(v4)
    ns = f"v4-{uuid.uuid4().hex[:6]}"
    create_namespace(v4, ns)
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, ns)
        payload = os.urandom(3 * 1024 * 1024)
        stream = open_exec(kube, ns, pod.name, bounded_input(["sha256sum"], len(payload)), stdin=True)
        assert stream.protocol == V4
        assert not stream.can_close_stdin
        out: list[bytes] = []
        stream.run(stdin=[payload], stdout=out.append).check("upload over v4")
        assert b"".join(out).split()[0].decode() == hashlib.sha256(payload).hexdigest()
        with pytest.raises(DrError, match=r"requested protocol\(s\) are not supported"):
            open_exec(kube, ns, pod.name, ["true"], protocols=[V5])
        pod.delete()


def test_unpullable_image_fails_fast_and_the_pod_is_removed(cluster: Cluster, namespace: str) -> None:
    kube = kube_for(cluster)
    manifest = busybox_pod(namespace)
    manifest["spec"]["containers"][0]["image"] = "registry.invalid/none:1"
    with pytest.raises(pods.PodStartError, match=r'image "registry.invalid/none:1" cannot be pulled'), \
            cleanup.scope(lambda _m: None, lambda _f: None):
        pods.wait_running(pods.create(kube, manifest, what="test"), timeout=60)
    left = cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout
    assert left.strip() == ""


def test_a_pod_created_after_its_delete_is_deleted_by_the_wait(cluster: Cluster, namespace: str) -> None:
    """Ctrl-C during a create: the API server creates the pod after the client gave up on the answer, and the
    DELETE sent at once found nothing. The wait that follows must ask again, not wait for a pod nobody deletes
    (it did: the etcd restore's pod outlived the command after Ctrl-C)."""
    kube = kube_for(cluster)
    manifest = busybox_pod(namespace)
    pod = pods.HelperPod(kube, namespace, manifest["metadata"]["name"])
    pod.request_delete()  # 404: not created yet
    kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest)  # the create lands afterwards
    pod.wait_gone(timeout=20)
    left = cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout
    assert left.strip() == ""


def test_pod_security_rejection_explains_the_level(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kube = kube_for(cluster)
    manifest = busybox_pod(namespace, hostNetwork=True)
    with pytest.raises(ApiError) as info, cleanup.scope(lambda _m: None, lambda _f: None):
        pods.create(kube, manifest, what="rescue")
    assert info.value.reason == "Forbidden"
    assert 'violates PodSecurity "restricted:latest"' in info.value.message
    assert info.value.hint and f"Namespace {namespace} enforces" in info.value.hint


def test_unschedulable_pod_reports_the_scheduler_message(cluster: Cluster, namespace: str) -> None:
    kube = kube_for(cluster)
    manifest = busybox_pod(namespace, nodeSelector={"no-such-label": "x"})
    with pytest.raises(pods.PodStartError, match="unschedulable"), cleanup.scope(lambda _m: None, lambda _f: None):
        pods.wait_running(pods.create(kube, manifest, what="test"), stuck_after=3, timeout=30)
    assert cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.strip() == ""


# Full-duplex exec: stdin written while stdout streams back, on one TLS connection from two threads.
# With blocking reads and writes side by side on one OpenSSL connection this broke about one run in six
# ("the API server closed the connection"); every TLS call now runs alone and waits outside the lock.
def test_stdin_and_stdout_at_once_many_times(cluster: Cluster, namespace: str) -> None:
    kube = kube_for(cluster)
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, namespace)
        for round_no in range(12):
            data = os.urandom(8 << 20)
            echoed = bytearray()
            stream = open_exec(kube, namespace, pod.name, ["cat"], stdin=True)
            pieces = [data[i : i + 196_608] for i in range(0, len(data), 196_608)]
            stream.run(stdin=pieces, stdout=echoed.extend).check("cat")
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest(), round_no
            counted: list[bytes] = []
            stream = open_exec(kube, namespace, pod.name, ["wc", "-c"], stdin=True)
            stream.run(stdin=[b"x" * 1000, b"y" * 234], stdout=counted.append).check("wc")
            assert b"".join(counted).strip() == b"1234", round_no
        pod.delete()
