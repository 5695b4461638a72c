"""`namespace restore` and `namespace backup` interrupted at each of their steps, then run again.

A real `kubectl dr` subprocess is stopped as soon as it says it finished a step (the line it prints on
stderr): SIGKILL for most steps (nothing of ours can clean up), a real SIGINT for some (exit 130, its
cleanup runs). At the moment of the cut no workload may run above 0 replicas before every claim's data
is restored, and every workload at 0 carries the record the rerun scales it up from. The rerun must then
finish: the objects equal to those of an uninterrupted restore, the data as the app wrote it, and no pod
or lease of ours left behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.apps.mapping import RESTORED_FROM
from kubectl_dr.apps.restore import DATA_RESTORED, run_id_for
from kubectl_dr.workloads.records import ORIGINAL_REPLICAS, SCALED_DOWN_BY
from tests import cli_runner
from tests.cli_runner import clean_env, executable
from tests.datasets import differences, managed_pods, new_namespace, snapshot, volume_dir
from tests.polling import eventually

DB_WRITER = r"""
set -e
cd /data
if [ ! -e done ]; then
  mkdir -p tables
  seq 1 3000 > tables/orders
  head -c 70001 /dev/urandom > tables/blob
  printf 'v3' > schema_version
  ln -s tables/orders current
  touch -d @1000000000 schema_version
  touch done
fi
exec sleep 3600
"""
CRD_NAME = "gadgets.interrupt.example.com"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": CRD_NAME},
    "spec": {"group": "interrupt.example.com", "scope": "Namespaced",
             "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}
# What is compared between an interrupted-and-rerun restore and an uninterrupted one.
KINDS = "configmaps,secrets,serviceaccounts,roles,rolebindings,services,persistentvolumeclaims,deployments," \
        "statefulsets,gadgets"


def app_objects(ns: str) -> list[dict[str, Any]]:
    web = {"app": "web"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": ns},
         "data": {"greeting": "hello"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret", "namespace": ns},
         "type": "Opaque", "stringData": {"token": "s3cr3t"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "web-reads", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
         "spec": {"selector": web, "ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
         "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": web}, "template": {
             "metadata": {"labels": web},
             "spec": {"serviceAccountName": "web", "terminationGracePeriodSeconds": 1,
                      "securityContext": {"runAsUser": 1000680000, "runAsGroup": 1000680000},
                      "containers": [{"name": "web", "image": "busybox", "command": ["sleep", "3600"],
                                      "volumeMounts": [{"name": "config", "mountPath": "/config"}]}],
                      "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]}}}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
         "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}},
                               "spec": {"terminationGracePeriodSeconds": 1,
                                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                                            "fsGroupChangePolicy": "OnRootMismatch"},
                                        "containers": [{"name": "db", "image": "busybox",
                                                        "command": ["sh", "-c", DB_WRITER],
                                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
        {"apiVersion": "interrupt.example.com/v1", "kind": "Gadget", "metadata": {"name": "g1", "namespace": ns},
         "spec": {"size": 3}},
    ]


def ok(result: Any) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return str(result.stdout)


def get(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def pods_running(cluster: Any, ns: str, selector: str) -> bool:
    pods = get(cluster, "pods", "-n", ns, "-l", selector)["items"]
    return bool(pods) and all((p.get("status") or {}).get("phase") == "Running" for p in pods)


def restored_objects(cluster: Any, ns: str) -> dict[str, Any]:
    """The objects a restore made in `ns`, as the restore leaves them: what the server allocates or the
    controllers write (IPs, volumes, status, versions) left out, the namespace's name replaced."""
    out = {}
    for obj in get(cluster, KINDS, "-n", ns)["items"]:
        meta = obj["metadata"]
        if RESTORED_FROM not in (meta.get("annotations") or {}):
            continue  # made by the cluster (the default service account, its token)
        text = json.dumps(obj).replace(f'"{ns}"', '"NS"')
        obj = json.loads(text)
        obj.pop("status", None)
        for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace"):
            obj["metadata"].pop(key, None)
        annotations = obj["metadata"].get("annotations") or {}
        annotations.pop("pv.kubernetes.io/bind-completed", None)
        annotations.pop("pv.kubernetes.io/bound-by-controller", None)
        annotations.pop("volume.kubernetes.io/selected-node", None)
        annotations.pop("deployment.kubernetes.io/revision", None)
        spec = obj.get("spec") or {}
        for key in ("clusterIP", "clusterIPs", "volumeName"):
            spec.pop(key, None)
        out[f"{obj['kind']}/{meta['name']}"] = obj
    return out


def our_leases(cluster: Any, ns: str) -> list[str]:
    items = get(cluster, "leases", "-n", ns, "-l", "app.kubernetes.io/managed-by=kubectl-dr")["items"]
    return [i["metadata"]["name"] for i in items]


@pytest.fixture(scope="module")
def app(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    repo = tmp_path_factory.mktemp("interrupt-repo")
    ns = new_namespace(cluster, "cut")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}")
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in app_objects(ns)))
    eventually(lambda: pods_running(cluster, ns, "app=db") and pods_running(cluster, ns, "app=web"), timeout=240,
               what="the app running")
    eventually(lambda: (volume_dir(cluster, ns, "data-db-0") / "done").exists(), timeout=60, what="the db's data")
    data = snapshot(volume_dir(cluster, ns, "data-db-0"))
    backup = json.loads(ok(cli_runner.dr("ns", "backup", ns, "-o", "json", cluster=cluster, repo=repo,
                                         timeout=600)))
    # The reference: the same backup restored without interruption.
    reference = f"{ns}-whole"
    whole = cli_runner.dr("ns", "restore", ns, "--from", backup["id"], "--to", reference, "--yes",
                          cluster=cluster, repo=repo, timeout=600)
    ok(whole)
    info = {"ns": ns, "repo": repo, "id": backup["id"], "data": data, "reference": restored_objects(cluster, reference)}
    yield info
    for namespace in (ns, reference):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def run_until(cluster: Any, repo: Path, args: list[str], line: str, sig: signal.Signals) -> tuple[int, str]:
    """Run `kubectl dr ARGS` and send `sig` as soon as it prints `line` on stderr; its exit code and stderr."""
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(repo)})
    proc = subprocess.Popen([executable(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    try:
        for text in proc.stderr:
            seen.append(text)
            if line in text:
                proc.send_signal(sig)
                break
        seen.append(proc.stderr.read())
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = "".join(seen)
    assert any(line in s for s in seen[:-1]), f"never said {line!r}:\n{said}"
    return proc.returncode, said


def assert_nothing_started_early(cluster: Any, ns: str, backup_id: str) -> None:
    """At the moment of the cut: a workload above 0 only once every claim's data is restored; one at 0 carries
    this restore's record with the replicas it is to get."""
    claims = get(cluster, "pvc", "-n", ns)["items"] if namespace_exists(cluster, ns) else []
    all_restored = all((c["metadata"].get("annotations") or {}).get(DATA_RESTORED) == backup_id for c in claims)
    workloads = get(cluster, "deployments,statefulsets", "-n", ns)["items"] if claims else []
    for obj in workloads:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        annotations = obj["metadata"].get("annotations") or {}
        if obj["spec"]["replicas"]:
            assert all_restored, f"{name} scaled up before its claims' data was restored: {claims}"
        else:
            assert annotations.get(SCALED_DOWN_BY) == run_id_for(backup_id), (name, annotations)
            assert annotations.get(ORIGINAL_REPLICAS) == "1", (name, annotations)
    if not all_restored:
        assert get(cluster, "pods", "-n", ns, "-l", "app=db")["items"] == []


def namespace_exists(cluster: Any, ns: str) -> bool:
    return int(cluster.kubectl("get", "namespace", ns, check=False).returncode) == 0


# (the line the step ends with, the signal): one per step of the restore, in its order.
RESTORE_CUTS = {
    "after-preflight-and-dry-run": ("server dry run:", signal.SIGKILL),
    "namespace-created": ("created Namespace/", signal.SIGINT),
    "definition-established": ("established and served", signal.SIGKILL),
    "claims-created": ("created persistentvolumeclaims:", signal.SIGKILL),
    "config-and-rbac": ("created secrets:", signal.SIGKILL),
    "services": ("created services:", signal.SIGINT),
    "claim-data-under-way": ("starting rescue pod", signal.SIGKILL),
    "claim-data-restored": ("against the backup: all match", signal.SIGKILL),
    "workloads-created": ("created deployments.apps:", signal.SIGKILL),
    "scaled-up": ("replicas set back to", signal.SIGKILL),
}


@pytest.mark.parametrize("step", list(RESTORE_CUTS))
def test_restore_interrupted_after_each_step_is_finished_by_a_rerun(app: dict[str, Any], cluster: Any,
                                                                     step: str) -> None:
    line, sig = RESTORE_CUTS[step]
    ns, backup_id = app["ns"], app["id"]
    target = f"{ns}-{step}"[:63]
    if step == "definition-established":  # the definition gone, so that this restore creates it again
        cluster.kubectl("delete", "crd", CRD_NAME)
        eventually(lambda: cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0,
                   what="the definition deleted")
    args = ["ns", "restore", ns, "--from", backup_id, "--to", target, "--yes"]
    code, said = run_until(cluster, app["repo"], args, line, sig)
    assert code == (-sig if sig == signal.SIGKILL else 130), said
    assert_nothing_started_early(cluster, target, backup_id)
    if sig == signal.SIGINT and namespace_exists(cluster, target):  # its own cleanup ran: nothing of ours runs on
        assert managed_pods(cluster, target) == [] and our_leases(cluster, target) == [], said

    rerun = cli_runner.dr(*args, "-o", "json", cluster=cluster, repo=app["repo"], timeout=600)
    result = json.loads(ok(rerun))
    assert result["claims"][0]["state"].startswith(("restored", "data restored by an earlier run")), result
    assert restored_objects(cluster, target) == app["reference"]
    diffs = differences(app["data"], snapshot(volume_dir(cluster, target, "data-db-0")))
    assert not diffs, "\n".join(diffs)
    eventually(lambda: managed_pods(cluster, target) == [] and our_leases(cluster, target) == [], timeout=120,
               what="no pod or lease of ours left")
    eventually(lambda: pods_running(cluster, target, "app=db") and pods_running(cluster, target, "app=web"),
               timeout=180, what="the restored app running")
    cluster.kubectl("delete", "namespace", target, "--wait=false", check=False)
