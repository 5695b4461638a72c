"""`kubectl dr namespace backup|restore` against `kubectl get -o yaml` + `kubectl apply` of the same objects,
in the same run, on a loopback cluster (tests/cluster).

The namespace holds N objects (ConfigMaps and Secrets of a few KiB, Services, ServiceAccounts, Roles,
Deployments at 0 replicas: what an app namespace is made of) and C claims with a little data each.
kubectl's side reads the objects of those kinds as one YAML list and applies it into a fresh namespace
(objects only: kubectl has no way to carry the claims' data); kubectl dr's side is the whole job, with
its checks: discovery, every listable type, the cleaning, the repository's SHA-256; then the restore's
preflight, the server dry run of every object, the creates, the claims' data through `pvc restore`
(rescue pods) and the scale-up. `--no-volumes` runs are shown too, to compare like with like.

    python -m benchmarks.namespace_objects                    # 1000 objects, 10 claims
    python -m benchmarks.namespace_objects --objects 200 --claims 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.installed import as_installed
from tests.cli_runner import clean_env, executable, kubectl
from tests.cluster.fixture import start_cluster
from tests.datasets import make_claim, new_namespace, volume_dir

KINDS = "configmaps,secrets,services,serviceaccounts,roles,deployments,persistentvolumeclaims"


def objects(ns: str, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    makers = [
        lambda i: {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": ns},
                   "data": {"settings.ini": f"[app]\nid = {i}\n" + "x" * 2000}},
        lambda i: {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{i}", "namespace": ns},
                   "stringData": {"token": f"t-{i}" * 50}},
        lambda i: {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": ns},
                   "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}]}},
        lambda i: {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": f"sa-{i}", "namespace": ns}},
        lambda i: {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": f"r-{i}", "namespace": ns},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        lambda i: {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"d-{i}", "namespace": ns},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": f"a{i}"}},
                            "template": {"metadata": {"labels": {"app": f"a{i}"}}, "spec": {"containers": [
                                {"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]}}}},
    ]
    for i in range(n):
        out.append(makers[i % len(makers)](i))
    return out


def _for_apply(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The fields `kubectl apply` of a create refuses or that would collide, removed (as `kubectl neat` does)."""
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "ownerReferences"):
        meta.pop(key, None)
    meta["namespace"] = namespace
    obj.pop("status", None)
    spec = obj.get("spec") or {}
    for key in ("clusterIP", "clusterIPs", "volumeName"):
        spec.pop(key, None)
    return obj


def timed(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}… exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ns-bench-"))
    cluster = start_cluster(work / "cluster", control_planes=1, workers=1)
    try:
        ns = new_namespace(cluster, "bench")
        # Set up with one create per object (not timed; apply would first GET each one).
        cluster.kubectl("create", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects(ns, args.objects)),
                        timeout=1800)
        for i in range(args.claims):
            make_claim(cluster, ns, f"data-{i}")
            (volume_dir(cluster, ns, f"data-{i}") / "file").write_bytes(bytes(range(256)) * 4096)
        env = as_installed(clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(work / "repo")}))
        kube = [kubectl(), f"--kubeconfig={cluster.kubeconfig}"]
        rows = []
        get_s, listed = timed([*kube, "get", KINDS, "-n", ns, "-o", "json"], env)
        cluster.kubectl("create", "namespace", f"{ns}-kubectl")
        cleaned = [_for_apply(o, f"{ns}-kubectl") for o in json.loads(listed)["items"]]  # what a user must strip
        apply_s, _ = timed([*kube, "apply", "-f", "-"], env,
                           stdin="\n---\n".join(json.dumps(o) for o in cleaned))
        rows.append(("kubectl get -o json / apply (objects only)", get_s, apply_s))
        # The same objects as the backup reads: every namespaced type the server lists, found as kubectl finds
        # them (a user who wants a namespace's objects has no shorter way; `get all` leaves most kinds out).
        types_s, names = timed([*kube, "api-resources", "--namespaced", "--verbs=list", "-o", "name"], env)
        every_s, _ = timed([*kube, "get", ",".join(names.split()), "-n", ns, "-o", "json"], env)
        every_get_s = types_s + every_s
        rows.append(("kubectl api-resources + get every listable type", every_get_s, apply_s))
        for label, extra in (("kubectl dr ns (--no-volumes)", ["--no-volumes"]), ("kubectl dr ns (with claims)", [])):
            b_s, out = timed([executable(), "ns", "backup", ns, *extra, "-o", "json"], env)
            backup_id = json.loads(out)["id"]
            target = f"{ns}-dr{len(rows)}"
            r_s, _ = timed([executable(), "ns", "restore", ns, "--from", backup_id, "--to", target, "--yes",
                            *extra], env)
            rows.append((label, b_s, r_s))
        load = os.getloadavg()[0]
        print(f"{args.objects} objects, {args.claims} claims of 1 MiB; seconds (ratio to kubectl: >1 is faster); "
              f"load average at the end {load:.1f} on {os.cpu_count()} CPUs")
        print("backup ×: against kubectl get of the 7 kinds created; backup ×all: against kubectl get of every "
              "listable type (the objects the backup reads)")
        print(f"{'tool':48} {'backup s':>9} {'restore s':>10} {'backup ×':>9} {'backup ×all':>12} {'restore ×':>10}")
        for label, b_s, r_s in rows:
            print(f"{label:48} {b_s:9.1f} {r_s:10.1f} {get_s / b_s:9.2f} {every_get_s / b_s:12.2f} "
                  f"{apply_s / r_s:10.2f}")
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
