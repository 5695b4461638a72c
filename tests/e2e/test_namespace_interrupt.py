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
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.apps.mapping import RESTORED_FROM
from kubectl_dr.apps.restore import DATA_RESTORED, run_id_for
from kubectl_dr.workloads.records import ORIGINAL_REPLICAS, SCALED_DOWN_BY
from tests import cli_runner
from tests.cli_runner import clean_env, executable
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
                                         timeout=600, subprocess=True)))
    # The reference: the same backup restored without interruption.
    reference = f"{ns}-whole"
    whole = cli_runner.dr("ns", "restore", ns, "--from", backup["id"], "--to", reference, "--yes",
                          cluster=cluster, repo=repo, timeout=600, subprocess=True)
    ok(whole)
    info = {"ns": ns, "repo": repo, "id": backup["id"], "data": data, "reference": restored_objects(cluster, reference)}
    yield info
    for namespace in (ns, reference):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def run_until(cluster: Any, repo: Path, args: list[str], line: str, sig: signal.Signals) -> tuple[int, str]:
    """Run `kubectl dr ARGS` against the cluster and repository; `sig` as soon as it prints `line` on stderr."""
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(repo)})
    return cli_runner.run_until(args, env, line, sig)


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
    "claim-data-ctrl-c": ("setting owners, modes and times", signal.SIGINT),
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
    namespace_exists_before = namespace_exists(cluster, target)
    if sig == signal.SIGINT and namespace_exists(cluster, target):  # its own cleanup ran: nothing of ours runs on
        assert managed_pods(cluster, target) == [] and our_leases(cluster, target) == [], said
        # It says how to finish: this very command, the backup pinned by its ID (the rerun below is that line).
        hint = f"To finish, run the restore again:\n  kubectl dr ns restore {ns} --to {target} --yes --from {backup_id}"
        assert hint in said, said
        assert "consumers stay stopped" not in said, said  # a claim's note: this restore has no consumers yet
        args = shlex.split(said.split(hint.split("\n")[0])[1].strip().splitlines()[0])[2:]

    rerun = cli_runner.dr(*args, "-o", "json", cluster=cluster, repo=app["repo"], timeout=600, subprocess=True)
    result = json.loads(ok(rerun))
    if namespace_exists_before:
        assert "finishing an earlier run of this restore" in rerun.stderr, rerun.stderr
    assert result["claims"][0]["state"].startswith(("restored", "data restored by an earlier run")), result
    assert restored_objects(cluster, target) == app["reference"]
    diffs = differences(app["data"], snapshot(volume_dir(cluster, target, "data-db-0")))
    assert not diffs, "\n".join(diffs)
    eventually(lambda: managed_pods(cluster, target) == [] and our_leases(cluster, target) == [], timeout=120,
               what="no pod or lease of ours left")
    eventually(lambda: pods_running(cluster, target, "app=db") and pods_running(cluster, target, "app=web"),
               timeout=180, what="the restored app running")
    cluster.kubectl("delete", "namespace", target, "--wait=false", check=False)


# --- namespace backup ---------------------------------------------------------------------------------------

CLAIMS = ("alpha", "beta", "gamma")


def fill_claims(cluster: Any, ns: str, size: int) -> None:
    for i, name in enumerate(CLAIMS):
        make_claim(cluster, ns, name)
        vol = volume_dir(cluster, ns, name)
        build_app_tree(vol)
        (vol / "own").write_bytes(os.urandom((i + 1) * size))
        os.chown(vol / "own", APP_UID, APP_GID)


@pytest.fixture(scope="module")
def busy(cluster: Any) -> Iterator[dict[str, Any]]:
    """Three claims written as their app (uid 1000) writes them, a few megabytes each so a transfer takes a
    moment, and a Deployment using the first (the consumer --quiesce stops)."""
    ns = new_namespace(cluster, "cutb")
    fill_claims(cluster, ns, 1_000_003)
    reader = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reader", "namespace": ns},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "reader"}}, "template": {
                  "metadata": {"labels": {"app": "reader"}},
                  "spec": {"terminationGracePeriodSeconds": 1,
                           "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_GID},
                           "containers": [{"name": "r", "image": "busybox", "command": ["sleep", "3600"],
                                           "volumeMounts": [{"name": "a", "mountPath": "/a"}]}],
                           "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "alpha"}}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(reader))
    eventually(lambda: pods_running(cluster, ns, "app=reader"), timeout=180, what="the reader running")
    yield {"ns": ns}
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def app_backups(cluster: Any, repo: Path) -> list[dict[str, Any]]:
    listed = json.loads(ok(cli_runner.dr("backups", "list", "-o", "json", cluster=cluster, repo=repo)))
    items = listed if isinstance(listed, list) else listed.get("items") or listed.get("backups") or []
    return [b for b in items if b.get("type") == "app"]


def all_verify(cluster: Any, repo: Path) -> None:
    """Every backup the repository lists is whole: sizes and SHA-256 of every part as recorded."""
    listed = json.loads(ok(cli_runner.dr("backups", "list", "-o", "json", cluster=cluster, repo=repo)))
    items = listed if isinstance(listed, list) else listed.get("items") or listed.get("backups") or []
    for item in items:
        ok(cli_runner.dr("backups", "verify", item["id"], cluster=cluster, repo=repo, timeout=300, subprocess=True))


def assert_backup_whole(cluster: Any, repo: Path, made: dict[str, Any]) -> None:
    assert sorted(c["name"] for c in made["claims"]) == list(CLAIMS)
    stored = {o["kind"]: o for o in stored_objects(repo, made["id"]) if o["kind"] == "Deployment"}
    assert stored["Deployment"]["spec"]["replicas"] == 1  # as the app runs, whatever held it at 0
    assert not any(k.startswith("kubectl-dr.io/") for k in stored["Deployment"]["metadata"].get("annotations") or {})


def stored_objects(repo: Path, backup_id: str) -> list[dict[str, Any]]:
    [path] = [p for p in repo.rglob("objects.json") if backup_id in str(p)]
    return list(json.loads(path.read_text()))


def reader_back(cluster: Any, ns: str) -> bool:
    obj = get(cluster, "deployment", "reader", "-n", ns)
    return bool(obj["spec"]["replicas"] == 1 and ORIGINAL_REPLICAS not in (obj["metadata"].get("annotations") or {}))


BACKUP_CUTS = {
    "objects-read": ("read ", signal.SIGKILL, ()),
    "claim-half-sent": ("starting rescue pod", signal.SIGKILL, ("--parallel", "1")),
    "manifest-written": ("wrote backup", signal.SIGKILL, ()),
    # A claim's backup committed, the next one under way: Ctrl-C removes it, so nothing is left (it once stayed,
    # listed as the claim's newest backup).
    "claim-committed-ctrl-c": ("/beta, volume mounted", signal.SIGINT, ("--parallel", "1")),
    "quiesced-ctrl-c": ("scaled from 1 to 0", signal.SIGINT, ("--quiesce",)),
    "quiesced-killed": ("scaled from 1 to 0", signal.SIGKILL, ("--quiesce",)),
}


@pytest.mark.parametrize("step", list(BACKUP_CUTS))
def test_backup_interrupted_is_never_listed_and_a_rerun_makes_a_good_one(busy: dict[str, Any], cluster: Any,
                                                                          tmp_path: Path, step: str) -> None:
    line, sig, flags = BACKUP_CUTS[step]
    ns, repo = busy["ns"], tmp_path / "repo"
    code, said = run_until(cluster, repo, ["ns", "backup", ns, *flags], line, sig)
    assert code == (-sig if sig == signal.SIGKILL else 130), said
    listed = app_backups(cluster, repo) if repo.exists() else []
    if step == "manifest-written":
        assert len(listed) == 1, listed  # written whole before it said so
    else:
        assert listed == [], listed
    if repo.exists():
        all_verify(cluster, repo)  # what a killed run left is either whole or not listed at all
    if sig == signal.SIGINT and repo.exists():
        everything = json.loads(ok(cli_runner.dr("backups", "list", "-o", "json", "--all-clusters", cluster=cluster,
                                                 repo=repo)))
        assert everything["items"] == [], everything  # not even a claim's backup
    if sig == signal.SIGINT:
        assert reader_back(cluster, ns), said  # its cleanup put the consumer back
        assert managed_pods(cluster, ns) == [] and our_leases(cluster, ns) == [], said

    # The rerun, as the user types it again: a whole backup, the consumer running again at the end.
    rerun = cli_runner.dr("ns", "backup", ns, *flags, "-o", "json", cluster=cluster, repo=repo, timeout=600,
                          subprocess=True)
    made = json.loads(ok(rerun))
    assert_backup_whole(cluster, repo, made)
    assert reader_back(cluster, ns)
    ok(cli_runner.dr("backups", "verify", made["id"], cluster=cluster, repo=repo, subprocess=True))
    assert len(app_backups(cluster, repo)) == len(listed) + 1
    eventually(lambda: managed_pods(cluster, ns) == [] and our_leases(cluster, ns) == [], timeout=120,
               what="no pod or lease of ours left")


def test_backup_after_a_killed_quiesce_says_the_app_is_still_stopped(busy: dict[str, Any], cluster: Any,
                                                                      tmp_path: Path) -> None:
    # A --quiesce run killed: the consumer stays at 0 with its record. A plain backup after it must not
    # record the app as stopped (a restore would bring it back at 0 for good), and says how to start it.
    ns, repo = busy["ns"], tmp_path / "repo"
    code, said = run_until(cluster, repo, ["ns", "backup", ns, "--quiesce"], "scaled from 1 to 0", signal.SIGKILL)
    assert code == -signal.SIGKILL, said
    assert get(cluster, "deployment", "reader", "-n", ns)["spec"]["replicas"] == 0
    plain = cli_runner.dr("ns", "backup", ns, "--no-volumes", "-o", "json", cluster=cluster, repo=repo, subprocess=True)
    made = json.loads(ok(plain))
    assert "deployment.apps/reader -n " + ns in plain.stderr and "is held at 0 by run" in plain.stderr, plain.stderr
    assert f"kubectl dr scale restore -n {ns}" in plain.stderr
    stored = {o["kind"]: o for o in stored_objects(repo, made["id"]) if o["kind"] == "Deployment"}
    assert stored["Deployment"]["spec"]["replicas"] == 1
    ok(cli_runner.dr("scale", "restore", "-n", ns, cluster=cluster, subprocess=True))
    assert reader_back(cluster, ns)
    eventually(lambda: pods_running(cluster, ns, "app=reader"), timeout=120, what="the reader running again")


def test_ctrl_c_stops_claims_backed_up_side_by_side_promptly(cluster_factory: Any, tmp_path: Path) -> None:
    # A slow link (4 Mbit/s per stream): each claim takes half a minute to send. Ctrl-C must not wait for them.
    slow = cluster_factory(control_planes=1, workers=1, link_mbit=4)
    ns, repo = new_namespace(slow, "cutp"), tmp_path / "repo"
    fill_claims(slow, ns, 16_000_000)
    env = clean_env({"KUBECONFIG": str(slow.kubeconfig), "KUBECTL_DR_REPO": str(repo)})
    proc = subprocess.Popen([executable(), "ns", "backup", ns, "--parallel", "3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: proc.poll() is not None or len(managed_pods(slow, ns)) == 3, timeout=120,
                   what="three rescue pods at once")
        time.sleep(2)  # the streams under way
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "stopping: removing the rescue pods of the 3 claim backups under way" in err, err
    assert took < 20, f"Ctrl-C took {took:.0f}s to stop the claims under way:\n{err}"
    assert managed_pods(slow, ns) == [] and our_leases(slow, ns) == [], err
    listed = json.loads(ok(cli_runner.dr("backups", "list", "-o", "json", cluster=slow, repo=repo)))
    assert not listed or not (listed if isinstance(listed, list) else listed.get("items")), listed
