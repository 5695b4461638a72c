"""An application backed up and restored as its users run it: objects and volumes together.

The app is written as its users would: a StatefulSet database whose data its non-root uid (1000) writes
(a symlink, an old mtime), a Deployment reading a ConfigMap and a Secret, a Service with a node port and
the database's headless Service, a ServiceAccount with a Role and RoleBinding, a CRD with a custom
resource, an HPA and a NetworkPolicy. It is backed up once (module-scoped), then restored under another
name in the same cluster, refused by the server dry run (a taken node port) without leaving anything,
checked against existing objects three ways, and, after the namespace is deleted, restored into a
second loopback cluster. Objects are compared as a restore should leave them, data from the app's side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, dr, executable
from tests.datasets import (
    APP_GID,
    APP_UID,
    build_app_tree,
    differences,
    make_claim,
    managed_pods,
    new_namespace,
    snapshot,
    volume_dir,
)
from tests.polling import eventually

NODE_PORT = 30777
DB_WRITER = r"""
set -e
cd /data
if [ ! -e done ]; then
  mkdir -p tables
  seq 1 5000 > tables/orders
  printf 'v3' > schema_version
  ln -s tables/orders current
  touch -d @1000000000 schema_version
  touch done
fi
exec sleep 3600
"""
WEB = r"""
cat /config/greeting > /tmp/seen
printf '%s' "$API_TOKEN" >> /tmp/seen
exec sleep 3600
"""
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "backupplans.shop.example.com"},
    "spec": {"group": "shop.example.com", "scope": "Namespaced",
             "names": {"plural": "backupplans", "singular": "backupplan", "kind": "BackupPlan"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def app_objects(ns: str) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": ns},
         "data": {"greeting": "hello from the config"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret", "namespace": ns},
         "type": "Opaque", "stringData": {"token": "s3cr3t"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "read-config",
                                                                                    "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "web-reads-config", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
         "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns, "labels": labels},
         "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80, "nodePort": NODE_PORT}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
         "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns,
                                                                    "labels": labels},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"serviceAccountName": "web", "terminationGracePeriodSeconds": 1,
                      "securityContext": {"runAsUser": 1000680000, "runAsGroup": 1000680000},
                      "containers": [{"name": "web", "image": "busybox", "command": ["sh", "-c", WEB],
                                      "env": [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
                                          "name": "web-secret", "key": "token"}}}],
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
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web",
                                                                                         "namespace": ns},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                  "minReplicas": 2, "maxReplicas": 4}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "db-from-web",
                                                                                     "namespace": ns},
         "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": labels}}]}]}},
        {"apiVersion": "shop.example.com/v1", "kind": "BackupPlan", "metadata": {"name": "nightly", "namespace": ns},
         "spec": {"schedule": "0 3 * * *", "keep": 7}},
    ]




def ok(result: Any) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return str(result.stdout)


def get(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def pods_running(cluster: Any, ns: str, selector: str, n: int) -> bool:
    pods = get(cluster, "pods", "-n", ns, "-l", selector)["items"]
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running") == n


def seen_by_web(cluster: Any, ns: str) -> str:
    pod = get(cluster, "pods", "-n", ns, "-l", "app=web")["items"][0]["metadata"]["name"]
    return str(cluster.kubectl("exec", "-n", ns, pod, "--", "cat", "/tmp/seen").stdout)


def controlled_and_served(cluster: Any, ns: str) -> bool:
    """The restored app as its controllers leave it: the restore creates objects without ownerReferences,
    the cluster's controllers own what they made (ReplicaSets by the Deployment, pods by the ReplicaSet and
    the StatefulSet) and every Service with a selector has EndpointSlices listing its ready pods."""
    def controller(obj: dict[str, Any]) -> tuple[str, str] | None:
        ref = next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        return (ref["kind"], ref["uid"]) if ref and ref.get("blockOwnerDeletion") else None

    deployment = get(cluster, "deployment", "web", "-n", ns)
    sts = get(cluster, "statefulset", "db", "-n", ns)
    sets = get(cluster, "replicasets", "-n", ns)["items"]
    if not sets or any(controller(rs) != ("Deployment", deployment["metadata"]["uid"]) for rs in sets):
        return False
    pods = get(cluster, "pods", "-n", ns)["items"]
    set_uids = {rs["metadata"]["uid"] for rs in sets}
    for p in pods:
        owner = controller(p)
        if p["metadata"]["labels"].get("app") == "web" and (owner is None or owner[1] not in set_uids):
            return False
        if p["metadata"]["labels"].get("app") == "db" and owner != ("StatefulSet", sts["metadata"]["uid"]):
            return False
    for service, app_label in (("web", "web"), ("db", "db")):
        svc = get(cluster, "service", service, "-n", ns)
        slices = get(cluster, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={service}")["items"]
        if not slices or any(s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
                             != "endpointslice-controller.k8s.io"
                             or s["metadata"]["ownerReferences"][0]["uid"] != svc["metadata"]["uid"] for s in slices):
            return False
        ready = sorted(e["addresses"][0] for s in slices for e in s.get("endpoints") or [] if e["conditions"]["ready"])
        want = sorted(p["status"]["podIP"] for p in pods if p["metadata"]["labels"].get("app") == app_label
                      and p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))
        if not want or ready != want:
            return False
    return True


@pytest.fixture(scope="module")
def app(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    repo = tmp_path_factory.mktemp("app-repo")
    ns = new_namespace(cluster, "shop")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/backupplans.shop.example.com")
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in app_objects(ns)))
    eventually(lambda: pods_running(cluster, ns, "app=db", 1) and pods_running(cluster, ns, "app=web", 2),
             timeout=240, what="the app running")
    eventually(lambda: (volume_dir(cluster, ns, "data-db-0") / "done").exists(), timeout=60, what="the db's data")
    data = snapshot(volume_dir(cluster, ns, "data-db-0"))
    out = ok(dr("namespace", "backup", ns, "-o", "json", timeout=600, cluster=cluster, repo=repo, subprocess=True))
    backup = json.loads(out)
    yield {"ns": ns, "repo": repo, "backup": backup, "id": backup["id"], "data": data}
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_backup_holds_the_objects_and_the_claim(app: dict[str, Any], cluster: Any) -> None:
    backup = app["backup"]
    kinds = backup["kinds"]
    for kind in ("ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment",
                 "StatefulSet", "HorizontalPodAutoscaler", "NetworkPolicy", "BackupPlan", "PersistentVolumeClaim",
                 "Namespace", "CustomResourceDefinition", "StorageClass"):
        assert kinds.get(kind), (kind, kinds)
    assert kinds["Service"] == 2 and "Pod" not in kinds and "ReplicaSet" not in kinds
    reasons = {e["object"].split("/")[0]: e["reason"] for e in backup["excluded"]}
    assert "made by the ReplicaSet controller" in reasons["Pod"] or "made by the StatefulSet" in reasons["Pod"]
    assert "made by the Deployment controller" in reasons["ReplicaSet"]
    assert "CustomResourceDefinition/backupplans.shop.example.com" in backup["clusterScoped"]
    [claim] = backup["claims"]
    assert claim["name"] == "data-db-0" and claim["entries"] >= 5 and claim["backup"]

    shown = ok(dr("backups", "show", app["id"], cluster=cluster, repo=app["repo"]))
    assert "objects.json" in shown and "record.json" in shown
    assert "BackupPlan" in shown and "data-db-0" in shown


def test_restore_under_another_name(app: dict[str, Any], cluster: Any) -> None:
    ns, target = app["ns"], f"{app['ns']}-copy"
    out = ok(dr("namespace", "restore", ns, "--from", app["id"], "--to", target, "--yes",
                "-o", "json", timeout=600, cluster=cluster, repo=app["repo"], subprocess=True))
    result = json.loads(out)
    assert result["counts"]["create"] >= 14
    actions = {o["object"]: o for o in result["objects"]}
    assert actions["CustomResourceDefinition/backupplans.shop.example.com"]["action"] == "skip"
    assert all(o["serverDryRun"] in ("accepted", None) or o["action"] == "skip" for o in result["objects"]), result
    [claim] = result["claims"]
    assert claim["state"].startswith("restored") and claim["entries"] == app["backup"]["claims"][0]["entries"]

    # Objects as the restore leaves them: same content, the namespace mapped, allocated fields new.
    assert get(cluster, "configmap", "web-config", "-n", target)["data"] == {"greeting": "hello from the config"}
    assert get(cluster, "secret", "web-secret", "-n", target)["data"] == get(cluster, "secret", "web-secret", "-n",
                                                                               ns)["data"]
    binding = get(cluster, "rolebinding", "web-reads-config", "-n", target)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "web", "namespace": target}]
    web = get(cluster, "service", "web", "-n", target)
    assert web["spec"]["ports"][0]["nodePort"] != NODE_PORT  # the original still holds it
    assert web["spec"]["clusterIP"] != get(cluster, "service", "web", "-n", ns)["spec"]["clusterIP"]
    assert get(cluster, "service", "db", "-n", target)["spec"]["clusterIP"] == "None"
    assert get(cluster, "backupplan", "nightly", "-n", target)["spec"] == {"schedule": "0 3 * * *", "keep": 7}
    deployment = get(cluster, "deployment", "web", "-n", target)
    assert deployment["spec"]["replicas"] == 2
    assert not any(k.startswith("kubectl-dr.io/original") for k in deployment["metadata"].get("annotations") or {})
    assert get(cluster, "statefulset", "db", "-n", target)["spec"]["replicas"] == 1
    assert get(cluster, "hpa", "web", "-n", target)["spec"]["maxReplicas"] == 4
    assert get(cluster, "networkpolicy", "db-from-web", "-n", target)["spec"]["podSelector"] == {
        "matchLabels": {"app": "db"}}

    # Data from the app's side: the database's volume as its uid wrote it, the web pods read their config.
    diffs = differences(app["data"], snapshot(volume_dir(cluster, target, "data-db-0")))
    assert not diffs, "\n".join(diffs)
    eventually(lambda: pods_running(cluster, target, "app=web", 2) and pods_running(cluster, target, "app=db", 1),
             timeout=120, what="the restored app running")
    eventually(lambda: "s3cr3t" in seen_by_web(cluster, target), what="web read its config")
    assert seen_by_web(cluster, target) == "hello from the configs3cr3t"
    eventually(lambda: controlled_and_served(cluster, target), timeout=60,
               what="ReplicaSets and pods owned by their controllers, EndpointSlices for the Services")

    # A rerun finds everything done: nothing created, the claim not written again.
    again = json.loads(ok(dr("ns", "restore", ns, "--from", app["id"], "--to", target,
                             "--yes", "-o", "json", cluster=cluster, repo=app["repo"], subprocess=True)))
    assert again["counts"]["create"] == 0
    assert again["claims"][0]["state"] == "data restored by an earlier run"

    # diff: the restored namespace equals the backup but for what the target allocates.
    diff = json.loads(ok(dr("ns", "diff", ns, "--from", app["id"], "--to", target, "-o",
                            "json", cluster=cluster, repo=app["repo"], subprocess=True)))
    changed = {o["object"]: o["fields"] for o in diff["objects"] if o["change"] != "same"}
    assert set(changed) <= {f"Service/{target}/web"}, changed
    [claim_diff] = diff["claims"]
    assert claim_diff["pvcDiff"]["identical"] is True, claim_diff

    # Drift after the restore, from the app's side: a table rewritten, a config changed. The namespace is not
    # identical, whatever its objects say.
    orders = volume_dir(cluster, target, "data-db-0") / "tables" / "orders"
    orders.write_text("lost\n")
    os.chown(orders, 1000, 1000)
    cluster.kubectl("patch", "configmap", "web-config", "-n", target, "-p", '{"data": {"greeting": "drifted"}}')
    after = dr("ns", "diff", ns, "--from", app["id"], "--to", target, "--exit-code", "-o", "json",
               cluster=cluster, repo=app["repo"], subprocess=True)
    assert after.returncode == 1, after.stderr
    assert json.loads(after.stdout)["identical"] is False
    assert json.loads(after.stdout)["claims"][0]["pvcDiff"]["identical"] is False

    # The same command again: that restore finished, so there is nothing to do, and it says how to redo it.
    same = dr("ns", "restore", ns, "--from", app["id"], "--to", target, "--yes", cluster=cluster, repo=app["repo"],
              subprocess=True)
    assert same.returncode == 0 and "finished before: nothing to do" in same.stderr, same.stderr
    assert orders.read_text() == "lost\n"
    # --existing update restores it again over the drift (it once skipped everything and said "restored").
    redone = json.loads(ok(dr("ns", "restore", ns, "--from", app["id"], "--to", target, "--existing", "update",
                              "--yes", "-o", "json", cluster=cluster, repo=app["repo"], subprocess=True)))
    assert redone["claims"][0]["state"].startswith("restored "), redone["claims"]
    assert orders.read_text() == "\n".join(str(i) for i in range(1, 5001)) + "\n"
    assert get(cluster, "configmap", "web-config", "-n", target)["data"] == {"greeting": "hello from the config"}


def test_server_dry_run_refuses_before_anything_is_created(app: dict[str, Any], cluster: Any) -> None:
    ns, target = app["ns"], f"{app['ns']}-ports"
    result = dr("ns", "restore", ns, "--from", app["id"], "--to", target, "--yes",
                "--preserve-nodeports", "--no-volumes", cluster=cluster, repo=app["repo"], subprocess=True)
    assert result.returncode == 1, result
    assert f"Service/{target}/web" in result.stderr and "provided port is already allocated" in result.stderr
    assert f"Namespace/{target}, created first so the rest could be checked, deleted again" in result.stderr
    gone = cluster.kubectl("get", "namespace", target, "-o", "jsonpath={.status.phase}", check=False)
    assert gone.returncode != 0 or gone.stdout == "Terminating"
    assert cluster.kubectl("get", "deployments", "-n", target, "-o", "name", check=False).stdout == ""

    # Into a namespace that exists, with a quota: the dry run meets the quota before the first create.
    quoted = new_namespace(cluster, "shop-quota")
    cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-statefulsets", "namespace": quoted},
        "spec": {"hard": {"count/statefulsets.apps": "0"}}}))
    refused = dr("ns", "restore", ns, "--from", app["id"], "--to", quoted, "--yes", cluster=cluster, repo=app["repo"])
    assert refused.returncode == 1, refused
    assert (f'StatefulSet/{quoted}/db: statefulsets.apps "db" is forbidden: exceeded quota: no-statefulsets, '
            "requested: count/statefulsets.apps=1, used: count/statefulsets.apps=0, limited: "
            "count/statefulsets.apps=0") in refused.stderr
    assert "; nothing was created" in refused.stderr
    assert cluster.kubectl("get", "configmaps,secrets,services,pvc", "-n", quoted, "-o", "name").stdout == ""


def test_an_interrupted_restore_starts_no_app_and_a_rerun_finishes(app: dict[str, Any],
                                                                              cluster: Any) -> None:
    ns, target = app["ns"], f"{app['ns']}-cut"
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(app["repo"])})
    proc = subprocess.Popen([executable(), "ns", "restore", ns, "--from", app["id"], "--to", target, "--yes"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Cut it while the claim's data is being restored: the objects exist, the rescue pod runs.
        eventually(lambda: proc.poll() is not None or bool(managed_pods(cluster, target)), timeout=120,
                 what="the claim's restore started")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    # The objects are there, the claim half restored: no workload exists yet, so nothing started on it.
    assert get(cluster, "configmap", "web-config", "-n", target)["data"]["greeting"] == "hello from the config"
    assert cluster.kubectl("get", "deployments,statefulsets", "-n", target, "-o", "name").stdout == ""
    eventually(lambda: not managed_pods(cluster, target), what="the rescue pod removed")

    result = json.loads(ok(dr("ns", "restore", ns, "--from", app["id"], "--to", target,
                              "--yes", "-o", "json", timeout=600, cluster=cluster, repo=app["repo"], subprocess=True)))
    assert result["counts"]["create"] == 2 and result["claims"][0]["state"].startswith("restored")
    assert get(cluster, "deployment", "web", "-n", target)["spec"]["replicas"] == 2
    diffs = differences(app["data"], snapshot(volume_dir(cluster, target, "data-db-0")))
    assert not diffs, "\n".join(diffs)


def stored_objects(repo: Path, backup_id: str) -> list[dict[str, Any]]:
    [path] = [p for p in repo.rglob("objects.json") if backup_id in str(p)]
    return list(json.loads(path.read_text()))


def test_backup_options(app: dict[str, Any], cluster: Any) -> None:
    ns, repo = app["ns"], app["repo"]
    before = ok(dr("backups", "list", "-o", "json", cluster=cluster, repo=repo))
    plan = json.loads(ok(dr("--dry-run=client", "ns", "backup", ns, "-o", "json", cluster=cluster, repo=repo)))
    assert plan["kind"] == "NamespaceBackupPlan" and plan["claims"][0]["name"] == "data-db-0"
    assert ok(dr("backups", "list", "-o", "json", cluster=cluster, repo=repo)) == before  # nothing written

    lean = json.loads(ok(dr("ns", "backup", ns, "--no-volumes", "--exclude-resources", "secrets",
                            "-o", "json", cluster=cluster, repo=repo, subprocess=True)))
    assert "Secret" not in lean["kinds"] and lean["claims"] == []
    picked = json.loads(ok(dr("ns", "backup", ns, "-l", "app=web", "--no-volumes",
                              "--include-resources", "deployments,svc", "-o", "json", cluster=cluster, repo=repo,
                              subprocess=True)))
    assert picked["kinds"] == {"Deployment": 1, "Namespace": 1, "Service": 1}

    unknown = dr("ns", "backup", ns, "--include-resources", "gizmos", cluster=cluster, repo=repo)
    assert unknown.returncode == 2 and 'resource type "gizmos"' in unknown.stderr
    missing = dr("ns", "backup", "no-such-namespace", cluster=cluster, repo=repo)
    assert missing.returncode == 1 and 'namespaces "no-such-namespace" not found' in missing.stderr
    fresh = repo.parent / "never-made"
    mistyped = dr("ns", "backup", "no-such-namespace", cluster=cluster, repo=fresh)
    assert mistyped.returncode == 1 and not fresh.exists()  # no empty repository left for a typo

    # --quiesce: the app stopped for the whole backup, recorded as it runs, started again after.
    quiet = json.loads(ok(dr("ns", "backup", ns, "--quiesce", "-o", "json", timeout=600, cluster=cluster, repo=repo,
                             subprocess=True)))
    stored = {o["kind"]: o for o in stored_objects(repo, quiet["id"]) if o["kind"] in ("Deployment", "StatefulSet")}
    assert stored["Deployment"]["spec"]["replicas"] == 2 and stored["StatefulSet"]["spec"]["replicas"] == 1
    assert not any(k.startswith("kubectl-dr.io/") for k in stored["Deployment"]["metadata"].get("annotations") or {})
    assert get(cluster, "deployment", "web", "-n", ns)["spec"]["replicas"] == 2
    assert get(cluster, "statefulset", "db", "-n", ns)["spec"]["replicas"] == 1
    assert quiet["claims"][0]["entries"] == app["backup"]["claims"][0]["entries"]


def test_encrypted_backup_keeps_the_secrets_secret(app: dict[str, Any], cluster: Any, tmp_path: Path) -> None:
    import pyrage

    ns = app["ns"]
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.txt"
    key_file.write_text(f"{identity}\n")
    repo = tmp_path / "repo"
    made = json.loads(ok(dr("ns", "backup", ns, "--no-volumes", "--encrypt-to",
                            str(identity.to_public()), "-o", "json", cluster=cluster, repo=repo, subprocess=True)))
    secret_b64 = get(cluster, "secret", "web-secret", "-n", ns)["data"]["token"].encode()
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert files and not any(secret_b64 in p.read_bytes() or b"s3cr3t" in p.read_bytes() for p in files)
    refused = dr("ns", "restore", ns, "--from", made["id"], "--to", f"{ns}-enc", "--yes",
                 "--no-volumes", cluster=cluster, repo=repo)
    assert refused.returncode == 1 and "--identity" in refused.stderr
    assert cluster.kubectl("get", "namespace", f"{ns}-enc", check=False).returncode != 0
    ok(dr("ns", "restore", ns, "--from", made["id"], "--to", f"{ns}-enc", "--yes", "--no-volumes",
          "-i", str(key_file), cluster=cluster, repo=repo, subprocess=True))
    assert get(cluster, "secret", "web-secret", "-n", f"{ns}-enc")["data"]["token"].encode() == secret_b64


def test_existing_objects_three_ways(app: dict[str, Any], cluster: Any) -> None:
    ns = app["ns"]
    target = new_namespace(cluster, "shop-existing")
    cluster.kubectl("create", "configmap", "web-config", "-n", target, "--from-literal=greeting=mine")
    args = ("ns", "restore", ns, "--from", app["id"], "--to", target, "--yes", "--no-volumes")
    # Another run restoring into the same namespace holds its lease: this one refuses, before anything changes.
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": f"kubectl-dr-ns-restore-{target}", "namespace": "kube-system"},
             "spec": {"holderIdentity": "run 20261208T000000Z-0a0b0c on host elsewhere (pid 7)",
                      "leaseDurationSeconds": 60, "acquireTime": now, "renewTime": now}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(lease))
    busy = dr(*args, cluster=cluster, repo=app["repo"])
    assert busy.returncode == 1 and f"working on a restore into namespace {target}" in busy.stderr, busy.stderr
    cluster.kubectl("delete", "lease", "-n", "kube-system", f"kubectl-dr-ns-restore-{target}")
    failed = dr(*args, cluster=cluster, repo=app["repo"])
    assert failed.returncode == 1
    assert f"ConfigMap/{target}/web-config" in failed.stderr and "--existing=fail: nothing was created" in \
        failed.stderr
    assert cluster.kubectl("get", "secrets,deployments", "-n", target, "-o", "name").stdout.strip() == ""

    skipped = json.loads(ok(dr(*args, "--existing", "skip", "-o", "json", timeout=300, cluster=cluster,
                               repo=app["repo"], subprocess=True)))
    assert {o["object"]: o["action"] for o in skipped["objects"]}[f"ConfigMap/{target}/web-config"] == "skip"
    assert get(cluster, "configmap", "web-config", "-n", target)["data"] == {"greeting": "mine"}

    updated = json.loads(ok(dr(*args, "--existing", "update", "-o", "json", timeout=300, cluster=cluster,
                               repo=app["repo"], subprocess=True)))
    actions = {o["object"]: o["action"] for o in updated["objects"]}
    assert actions[f"ConfigMap/{target}/web-config"] == "update"
    assert get(cluster, "configmap", "web-config", "-n", target)["data"] == {"greeting": "hello from the config"}


def test_restore_into_a_second_cluster_after_the_namespace_is_lost(app: dict[str, Any], cluster: Any,
                                                                    cluster_factory: Any) -> None:
    ns = app["ns"]
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    other = cluster_factory(control_planes=1, workers=1)
    assert other.kubeconfig != cluster.kubeconfig
    latest = dr("ns", "restore", ns, "--from", "latest", "--yes", cluster=other, repo=app["repo"])
    assert latest.returncode == 1 and "from other clusters" in latest.stderr  # another cluster's: named, not picked
    assert "restore one with --from ID" in latest.stderr
    plan = json.loads(ok(dr("--dry-run=server", "ns", "restore", ns, "--from", app["id"],
                            "-o", "json", cluster=other, repo=app["repo"])))
    assert plan["kind"] == "NamespaceRestorePlan"
    assert other.kubectl("get", "namespace", ns, check=False).returncode != 0  # a dry run created nothing
    result = json.loads(ok(dr("ns", "restore", ns, "--from", app["id"], "--yes", "-o", "json",
                              timeout=600, cluster=other, repo=app["repo"], subprocess=True)))
    actions = {o["object"]: o["action"] for o in result["objects"]}
    assert f"backup {app['id']} is of " in (result["origin"] or ""), result["origin"]  # said in the result too
    assert actions["CustomResourceDefinition/backupplans.shop.example.com"] == "create"
    assert get(other, "backupplan", "nightly", "-n", ns)["spec"]["keep"] == 7
    assert get(other, "service", "web", "-n", ns)["spec"]["ports"][0]["nodePort"] != 0
    diffs = differences(app["data"], snapshot(volume_dir(other, ns, "data-db-0")))
    assert not diffs, "\n".join(diffs)
    eventually(lambda: pods_running(other, ns, "app=web", 2) and pods_running(other, ns, "app=db", 1), timeout=120,
             what="the app running in the second cluster")
    eventually(lambda: "s3cr3t" in seen_by_web(other, ns), what="web read its config")
    eventually(lambda: controlled_and_served(other, ns), timeout=60,
               what="ReplicaSets and pods owned by their controllers, EndpointSlices for the Services")
    assert os.path.basename(str(volume_dir(other, ns, "data-db-0"))).startswith("pv-")


def test_claims_are_backed_up_side_by_side_and_restored_whole(cluster: Any, tmp_path: Path) -> None:
    # Three claims, two at a time: every claim's data in the backup as its app wrote it (uid 1000), no pod left.
    ns = new_namespace(cluster, "many")
    names = ("alpha", "beta", "gamma")
    before = {}
    for i, name in enumerate(names):
        make_claim(cluster, ns, name)
        vol = volume_dir(cluster, ns, name)
        build_app_tree(vol)
        (vol / "own").write_bytes(os.urandom((i + 1) * 300_007))
        os.chown(vol / "own", APP_UID, APP_GID)
        # build_app_tree's lost+found is mkfs's: never backed up, so not compared
        before[name] = {k: v for k, v in snapshot(vol).items() if not k.startswith(b"lost+found")}
    repo = tmp_path / "repo"
    made = dr("ns", "backup", ns, "--parallel", "2", "-o", "json", timeout=600, cluster=cluster, repo=repo,
              subprocess=True)
    backup = json.loads(ok(made))
    assert "backing up 3 claims, 2 at a time" in made.stderr
    assert sorted(c["name"] for c in backup["claims"]) == list(names)
    assert len({c["backup"] for c in backup["claims"]}) == 3
    assert not managed_pods(cluster, ns)

    target = f"{ns}-back"
    restored = json.loads(ok(dr("ns", "restore", ns, "--from", backup["id"], "--to", target,
                                "--yes", "-o", "json", timeout=600, cluster=cluster, repo=repo, subprocess=True)))
    assert all(c["state"].startswith("restored") for c in restored["claims"]), restored["claims"]
    for name in names:
        assert differences(before[name], snapshot(volume_dir(cluster, target, name))) == [], name
    for namespace in (ns, target):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
