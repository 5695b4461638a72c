"""Real kubectl against the loopback cluster: the semantics kubectl-dr depends on behave as real."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.fixture import KUBECTL_VERSIONS, Cluster
from tests.conformance.kube import (
    CONTROL_PLANE_TOLERATION,
    ETCD_IMAGE,
    events_for,
    get_json,
    manifest,
    pod,
)
from tests.polling import eventually

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", params=KUBECTL_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ns(cluster: Cluster, version: str) -> Iterator[str]:
    name = f"sem-{version.replace('.', '')}"
    create(cluster, version, namespace(name))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", version=version, check=False)


def create(cluster: Cluster, version: str, *docs: dict[str, Any], check: bool = True) -> str:
    result = cluster.kubectl("create", "-f", "-", input=manifest(*docs), version=version, check=check)
    return str(result.stdout + result.stderr)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod_json(cluster: Cluster, ns: str, name: str, version: str) -> dict[str, Any]:
    return get_json(cluster, "-n", ns, "pod", name, version=version)


def scheduled_condition(cluster: Cluster, ns: str, name: str, version: str) -> dict[str, str] | None:
    status = pod_json(cluster, ns, name, version)["status"]
    assert isinstance(status, dict)
    return next((c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"), None)


def test_rwo_claim_on_another_node_stays_pending(cluster: Cluster, version: str, ns: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "rwo", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    volume = [{"name": "v", "persistentVolumeClaim": {"claimName": "rwo"}}]
    mounts = [{"name": "v", "mountPath": "/v"}]
    create(cluster, version, claim, pod("first", ns, volumes=volume, volumeMounts=mounts,
                                        nodeSelector={"kubernetes.io/hostname": "worker-1"}))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/first", "--timeout=60s", version=version)
    create(cluster, version, pod("second", ns, volumes=volume, volumeMounts=mounts,
                                 nodeSelector={"kubernetes.io/hostname": "cp-1"},
                                 tolerations=[CONTROL_PLANE_TOLERATION]))
    pv = get_json(cluster, "-n", ns, "pvc", "rwo", version=version)["spec"]["volumeName"]

    def attach_failed() -> list[dict[str, object]]:
        return [e for e in events_for(cluster, ns, "second", version=version)
                if e["reason"] == "FailedAttachVolume"]

    events = eventually(attach_failed, what="a FailedAttachVolume event")
    assert events[0]["type"] == "Warning"
    assert str(events[0]["message"]).startswith(f'Multi-Attach error for volume "{pv}" Volume is already used by')
    second = pod_json(cluster, ns, "second", version)
    assert second["spec"]["nodeName"] == "cp-1"
    assert second["status"]["phase"] == "Pending"


def test_no_toleration_no_control_plane(cluster: Cluster, version: str, ns: str) -> None:
    create(cluster, version, pod("on-cp", ns, nodeSelector={"kubernetes.io/hostname": "cp-1"}))
    cond = eventually(lambda: scheduled_condition(cluster, ns, "on-cp", version), what="PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"] == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    failed = [e for e in events_for(cluster, ns, "on-cp", version=version) if e["reason"] == "FailedScheduling"]
    assert failed and failed[0]["message"] == cond["message"] and failed[0]["type"] == "Warning"
    assert "nodeName" not in pod_json(cluster, ns, "on-cp", version)["spec"]


def test_unbound_claim_keeps_pod_pending(cluster: Cluster, version: str, ns: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "nocls", "namespace": ns},
             "spec": {"storageClassName": "missing", "accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    create(cluster, version, claim, pod("waits", ns, volumes=[
        {"name": "v", "persistentVolumeClaim": {"claimName": "nocls"}}]))
    cond = eventually(lambda: scheduled_condition(cluster, ns, "waits", version), what="PodScheduled")
    assert cond["message"] == (
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    events = eventually(lambda: [e for e in events_for(cluster, ns, "nocls", version=version)
                                 if e["reason"] == "ProvisioningFailed"], what="ProvisioningFailed")
    assert events[0]["message"] == 'storageclass.storage.k8s.io "missing" not found'
    assert get_json(cluster, "-n", ns, "pvc", "nocls", version=version)["status"]["phase"] == "Pending"


def test_hostpath_rejected_in_restricted_namespace(cluster: Cluster, version: str) -> None:
    name = f"restricted-{version.replace('.', '')}"
    create(cluster, version, namespace(name))
    try:
        cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                        version=version)
        out = create(cluster, version, pod("hp", name, volumes=[
            {"name": "host", "hostPath": {"path": "/etc"}}], volumeMounts=[
            {"name": "host", "mountPath": "/host"}]), check=False)
        assert 'Error from server (Forbidden): error when creating "STDIN": pods "hp" is forbidden: ' \
               'violates PodSecurity "restricted:latest": ' in out
        assert 'restricted volume types (volume "host" uses restricted volume type "hostPath")' in out
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", version=version, check=False)


def test_limited_user_forbidden(cluster: Cluster, version: str) -> None:
    result = cluster.kubectl("get", "secrets", "-n", "default", limited=True, check=False, version=version)
    assert result.returncode == 1
    assert result.stderr.strip() == ('Error from server (Forbidden): secrets is forbidden: User "dr-limited" '
                                     'cannot list resource "secrets" in API group "" in the namespace "default"')
    # The body itself, as a client library sees it.
    ctx = ssl.create_default_context(cafile=str(cluster.layout.pki / "ca.crt"))
    ctx.load_cert_chain(str(cluster.layout.pki / "limited.crt"), str(cluster.layout.pki / "limited.key"))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{cluster.server_url}/api/v1/namespaces/kube-system/pods/x", context=ctx)
    assert caught.value.code == 403
    assert json.loads(caught.value.read()) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "x" is forbidden: User "dr-limited" cannot get resource "pods" in API group "" '
                   'in the namespace "kube-system"',
        "reason": "Forbidden", "details": {"name": "x", "kind": "pods"}, "code": 403}
    # What the default policy does allow: reading pods in `default`.
    assert cluster.kubectl("get", "pods", "-n", "default", limited=True, version=version).returncode == 0


def test_busybox_tar_is_not_gnu_tar(cluster: Cluster, version: str, ns: str) -> None:
    create(cluster, version, pod("bb", ns))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/bb", "--timeout=60s", version=version)
    gnu_only = cluster.kubectl("-n", ns, "exec", "bb", "--", "tar", "-c", "--sort=name", "-f", "/dev/null",
                               "/etc", check=False, version=version)
    assert gnu_only.returncode != 0
    version_text = cluster.kubectl("-n", ns, "exec", "bb", "--", "sh", "-c", "tar --help 2>&1; true",
                                   version=version).stdout
    assert "BusyBox" in version_text
    common = cluster.kubectl("-n", ns, "exec", "bb", "--", "sh", "-c", "tar -cf - -C /etc passwd | tar -tf -",
                             version=version).stdout
    assert common == "passwd\n"


def test_etcd_image_has_no_tar(cluster: Cluster, version: str, ns: str) -> None:
    create(cluster, version,
           pod("etcd-tar", ns, image=ETCD_IMAGE, command=["tar", "--version"], restartPolicy="Never"),
           pod("etcd-ctl", ns, image=ETCD_IMAGE, command=["etcdctl", "version"], restartPolicy="Never"))

    def phase(name: str) -> str:
        return str(pod_json(cluster, ns, name, version)["status"].get("phase"))

    eventually(lambda: phase("etcd-ctl") == "Succeeded", what="etcdctl pod to succeed")
    assert "etcdctl version: 3.4.23" in cluster.kubectl("-n", ns, "logs", "etcd-ctl", version=version).stdout

    def tar_outcome() -> dict[str, object] | None:
        statuses = pod_json(cluster, ns, "etcd-tar", version)["status"].get("containerStatuses")
        state = (statuses or [{}])[0].get("state") or {}
        if "terminated" in state:
            return dict(state["terminated"])
        waiting = state.get("waiting") or {}
        return dict(waiting) if waiting.get("reason") not in (None, "ContainerCreating") else None

    outcome = eventually(tar_outcome, what="the tar container to fail")
    assert outcome.get("exitCode") != 0
    assert phase("etcd-tar") != "Succeeded"


def test_unknown_image_image_pull_backoff(cluster: Cluster, version: str, ns: str) -> None:
    create(cluster, version, pod("nope", ns, image="registry.invalid/kubectl-dr/nope:1"))
    cluster.kubectl("-n", ns, "wait", "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}="
                    "ImagePullBackOff", "pod/nope", "--timeout=60s", version=version)
    table = cluster.kubectl("-n", ns, "get", "pod", "nope", version=version).stdout.splitlines()
    assert table[1].split()[:3] == ["nope", "0/1", "ImagePullBackOff"]


def test_etcdctl_snapshot_from_control_plane_pod(cluster: Cluster, version: str, ns: str) -> None:
    mirror = get_json(cluster, "-n", "kube-system", "pod", "etcd-cp-1", version=version)
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"]
    assert mirror["metadata"]["ownerReferences"][0]["kind"] == "Node"
    endpoint = mirror["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"]
    assert f"--advertise-client-urls={endpoint}" in mirror["spec"]["containers"][0]["command"]
    pki = "/etc/kubernetes/pki/etcd"
    snap = pod("snap", ns, nodeSelector={"kubernetes.io/hostname": "cp-1"}, tolerations=[CONTROL_PLANE_TOLERATION],
               hostNetwork=True, volumes=[{"name": "certs", "hostPath": {"path": pki, "type": "Directory"}},
                                          {"name": "backup", "emptyDir": {}}],
               volumeMounts=[{"name": "backup", "mountPath": "/backup"}])
    snap["spec"]["initContainers"] = [{
        "name": "save", "image": mirror["spec"]["containers"][0]["image"],
        "command": ["etcdctl", f"--endpoints={endpoint}", f"--cacert={pki}/ca.crt",
                    f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key",
                    "snapshot", "save", "/backup/snapshot.db"],
        "env": [{"name": "ETCDCTL_API", "value": "3"}],
        "volumeMounts": [{"name": "certs", "mountPath": pki, "readOnly": True},
                         {"name": "backup", "mountPath": "/backup"}]}]
    create(cluster, version, snap)
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/snap", "--timeout=90s", version=version)
    logs = cluster.kubectl("-n", ns, "logs", "snap", "-c", "save", version=version).stdout
    assert "Snapshot saved at /backup/snapshot.db" in logs
    data = cluster.kubectl("-n", ns, "exec", "snap", "-c", "main", "--", "cat", "/backup/snapshot.db",
                           text=False, version=version).stdout
    # A snapshot is a bbolt file plus the SHA-256 of it, appended by the member.
    assert len(data) % 512 == 32
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


def test_bearer_token_authenticates(cluster: Cluster) -> None:
    """pki/token is a static token (kube-apiserver --token-auth-file format in pki/tokens.csv)."""
    token = (cluster.layout.pki / "token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(cluster.layout.pki / "ca.crt"))
    url = f"{cluster.server_url}/api/v1/namespaces/default/secrets"
    for header, code in ((f"Bearer {token}", 403), ("Bearer not-a-token", 401)):
        request = urllib.request.Request(url, headers={"Authorization": header})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, context=ctx)
        assert caught.value.code == code
        body = json.loads(caught.value.read())
        if code == 403:
            assert body["message"] == ('secrets is forbidden: User "system:serviceaccount:default:dr-token" '
                                       'cannot list resource "secrets" in API group "" in the namespace "default"')
        else:
            assert body["reason"] == "Unauthorized"


def test_unknown_token_is_401_on_public_paths_too(cluster: Cluster) -> None:
    ctx = ssl.create_default_context(cafile=str(cluster.layout.pki / "ca.crt"))
    for path in ("/version", "/version/", "/healthz", "/openapi/v2"):
        request = urllib.request.Request(f"{cluster.server_url}{path}",
                                         headers={"Authorization": "Bearer not-a-token"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, context=ctx)
        assert caught.value.code == 401, path
    with urllib.request.urlopen(f"{cluster.server_url}/version", context=ctx) as resp:  # anonymous
        assert json.loads(resp.read())["gitVersion"]


def test_kubernetes_service_targets_the_server_port(cluster: Cluster) -> None:
    port = int(cluster.state["server"]["port"])
    svc = get_json(cluster, "-n", "default", "service", "kubernetes", version=KUBECTL_VERSIONS[-1])
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(443, port)]
    eps = get_json(cluster, "-n", "default", "endpoints", "kubernetes", version=KUBECTL_VERSIONS[-1])
    assert eps["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                               "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
