"""Real kubectl (1.30 and 1.33) against the loopback cluster: the everyday verbs on workloads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.fixture import KUBECTL_VERSIONS, Cluster
from tests.conformance.kube import BUSYBOX, get_json, manifest

pytestmark = [pytest.mark.slow]


def workload_manifest(ns: str) -> str:
    labels_web, labels_db = {"app": "web"}, {"app": "db"}
    sleeper = {"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "echo started $HOSTNAME; sleep 3600"]}
    return manifest(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels_web}, "template": {
             "metadata": {"labels": labels_web},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{**sleeper, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                      "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
         "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": labels_db}, "template": {
             "metadata": {"labels": labels_db},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{**sleeper, "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]}},
             "volumeClaimTemplates": [{"metadata": {"name": "state"}, "spec": {
                 "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
    )


@pytest.fixture(scope="module", params=KUBECTL_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def workloads(cluster: Cluster, version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A namespace with a PVC, a Deployment and a StatefulSet, created with `kubectl create -f`."""
    ns = f"wl-{version.replace('.', '')}"
    path = tmp_path_factory.mktemp("manifests") / "workloads.yaml"
    path.write_text(workload_manifest(ns))
    out = cluster.kubectl("create", "-f", str(path), version=version).stdout
    assert out.splitlines() == [
        f"namespace/{ns} created",
        "persistentvolumeclaim/data created",
        "deployment.apps/web created",
        "statefulset.apps/db created",
    ]
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", version=version, check=False)


def test_get_nodes(cluster: Cluster, version: str) -> None:
    nodes = get_json(cluster, "nodes", version=version)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert sorted(by_name) == ["cp-1", "worker-1"]
    cp = by_name["cp-1"]
    assert cp["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in cp["spec"]["taints"]
    table = cluster.kubectl("get", "nodes", version=version).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["cp-1"][1:3] == ["Ready", "control-plane"]
    assert rows["worker-1"][1:3] == ["Ready", "<none>"]


def test_pvc_bound_and_listed(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    cluster.kubectl("-n", ns, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=60s",
                    version=version)
    table = cluster.kubectl("-n", ns, "get", "pvc", "data", version=version).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATUS", "VOLUME", "CAPACITY"]
    row = table[1].split()
    assert row[0:2] == ["data", "Bound"] and row[2].startswith("pvc-") and row[3:5] == ["1Gi", "RWO"]
    assert row[5] == "standard"


def test_rollout_scale_and_wait(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    out = cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=90s",
                          version=version).stdout
    assert out.strip().endswith('deployment "web" successfully rolled out')
    assert cluster.kubectl("-n", ns, "scale", "deployment/web", "--replicas=2",
                           version=version).stdout.strip() == "deployment.apps/web scaled"
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=90s", version=version)
    deploy = get_json(cluster, "-n", ns, "deployment", "web", version=version)
    assert deploy["status"]["readyReplicas"] == 2 and deploy["status"]["updatedReplicas"] == 2
    out = cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s",
                          version=version).stdout
    assert len(out.splitlines()) == 2 and all(line.endswith("condition met") for line in out.splitlines())
    table = cluster.kubectl("-n", ns, "get", "deploy", "web", version=version).stdout.splitlines()
    assert table[1].split()[:4] == ["web", "2/2", "2", "2"]


def test_statefulset_rollout_and_claims(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    out = cluster.kubectl("-n", ns, "rollout", "status", "statefulset/db", "--timeout=120s",
                          version=version).stdout
    # The API server defaults rollingUpdate.partition to 0, so kubectl reports a partitioned rollout,
    # exactly as it does against a real cluster.
    assert out == "partitioned roll out complete: 2 new pods have been updated...\n"
    sts = get_json(cluster, "-n", ns, "statefulset", "db", version=version)
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert sts["status"]["currentRevision"].startswith("db-")
    claims = {c["metadata"]["name"]: c for c in get_json(cluster, "-n", ns, "pvc", version=version)["items"]}
    for i in range(2):
        assert claims[f"state-db-{i}"]["status"]["phase"] == "Bound"
    pods = get_json(cluster, "-n", ns, "pods", "-l", "app=db", version=version)["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]


def test_rolling_update(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    cluster.kubectl("-n", ns, "set", "env", "deployment/web", "ROLLED=yes", version=version)
    out = cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=120s",
                          version=version).stdout
    assert out.strip().endswith('deployment "web" successfully rolled out')
    sets = get_json(cluster, "-n", ns, "replicasets", version=version)["items"]
    replicas = sorted((rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], rs["spec"]["replicas"])
                      for rs in sets)
    assert replicas == [("1", 0), ("2", 2)]
    pods = get_json(cluster, "-n", ns, "pods", "-l", "app=web", version=version)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2
    assert all({"name": "ROLLED", "value": "yes"} in p["spec"]["containers"][0]["env"] for p in live)


def test_statefulset_scale_to_zero_and_back_keeps_claims(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    volumes = {c["metadata"]["name"]: c["spec"]["volumeName"]
               for c in get_json(cluster, "-n", ns, "pvc", version=version)["items"]}
    cluster.kubectl("-n", ns, "scale", "statefulset/db", "--replicas=0", version=version)
    cluster.kubectl("-n", ns, "wait", "--for=delete", "pod/db-0", "pod/db-1", "--timeout=90s", version=version)
    cluster.kubectl("-n", ns, "scale", "statefulset/db", "--replicas=2", version=version)
    cluster.kubectl("-n", ns, "rollout", "status", "statefulset/db", "--timeout=120s", version=version)
    after = {c["metadata"]["name"]: c["spec"]["volumeName"]
             for c in get_json(cluster, "-n", ns, "pvc", version=version)["items"]}
    assert after == volumes


def test_exec_stdin_and_exit_code(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    result = cluster.kubectl("-n", ns, "exec", "-i", "db-0", "--", "sh", "-c", "wc -c; exit 7",
                             input="x" * 100_000, check=False, version=version)
    assert result.stdout.strip() == "100000"
    assert result.returncode == 7
    assert "command terminated with exit code 7" in result.stderr


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cp_directory_both_ways(cluster: Cluster, version: str, workloads: str, tmp_path: Path) -> None:
    ns = workloads
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (src / "sub" / "all-bytes.bin").write_bytes(bytes(range(256)) * 64)
    (src / "empty").write_bytes(b"")
    cluster.kubectl("-n", ns, "cp", str(src), "db-0:/state/copy", version=version)
    listing = cluster.kubectl("-n", ns, "exec", "db-0", "--", "sh", "-c",
                              "cd /state/copy && find . -type f | sort && sha256sum random.bin",
                              version=version).stdout
    assert "./sub/all-bytes.bin" in listing
    assert _tree(src)["random.bin"] in listing
    back = tmp_path / "back"
    cluster.kubectl("-n", ns, "cp", "db-0:/state/copy", str(back), version=version)
    assert _tree(back) == _tree(src)


def test_logs(cluster: Cluster, version: str, workloads: str) -> None:
    out = cluster.kubectl("-n", workloads, "logs", "db-1", version=version).stdout
    assert out == "started db-1\n"


def test_delete(cluster: Cluster, version: str, workloads: str) -> None:
    ns = workloads
    out = cluster.kubectl("-n", ns, "delete", "deployment", "web", version=version).stdout
    assert out.strip() == 'deployment.apps "web" deleted'
    cluster.kubectl("-n", ns, "wait", "--for=delete", "pod", "-l", "app=web", "--timeout=60s", version=version)
    assert get_json(cluster, "-n", ns, "replicasets", version=version)["items"] == []
    out = cluster.kubectl("delete", "namespace", ns, "--timeout=90s", version=version).stdout
    assert out.strip() == f'namespace "{ns}" deleted'
    gone = cluster.kubectl("get", "namespace", ns, check=False, version=version)
    assert gone.returncode == 1
    assert f'Error from server (NotFound): namespaces "{ns}" not found' in gone.stderr
