"""`kubectl dr scale down|restore` run as a subprocess against the loopback cluster, checked with real kubectl.

Each test works in its own namespace. Pods that must stop quickly trap SIGTERM; pods that must keep the
command waiting (to interrupt it) run a plain `sleep`, which as PID 1 ignores SIGTERM until the grace
period ends, as in a real cluster.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests.cli_runner import clean_env, executable
from tests.cli_runner import dr as run_cli
from tests.cluster.control.kubeconfig import DEFAULT_POLICY, LIMITED_CONTEXT
from tests.cluster.control.pki import LIMITED_USER
from tests.cluster.fixture import Cluster
from tests.polling import eventually

pytestmark = [pytest.mark.timeout(300)]

FAST_STOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
SLOW_STOP = ["sleep", "3600"]
ANNOTATIONS = ("kubectl-dr.io/original-replicas", "kubectl-dr.io/scaled-down-by", "kubectl-dr.io/scaled-down-at",
               "kubectl-dr.io/reason")


# ---- helpers -------------------------------------------------------------------------------------------

def wait_until(check: Callable[[], Any], timeout: float = 90.0, what: str = "condition",
               cluster: Cluster | None = None, namespace: str | None = None) -> Any:
    """eventually(), naming on timeout what the namespace holds."""
    def state() -> str:
        if cluster is None or namespace is None:
            return ""
        return str(cluster.kubectl("get", "all,pvc,events", "-n", namespace, "-o", "wide", check=False).stdout)
    return eventually(check, timeout, what, explain=state)


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
    items = manifest if isinstance(manifest, list) else [manifest]
    # A YAML stream of JSON documents: a `kind: List` would make kubectl fetch the protobuf OpenAPI v2
    # document, which the loopback server does not serve (406).
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input="\n---\n".join(json.dumps(i) for i in items))


def get(cluster: Cluster, namespace: str, ref: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", ref, "-n", namespace, "-o", "json").stdout)
    return result


def replicas(cluster: Cluster, namespace: str, ref: str) -> int:
    return int(get(cluster, namespace, ref)["spec"]["replicas"])


def annotations(cluster: Cluster, namespace: str, ref: str) -> dict[str, str]:
    notes = get(cluster, namespace, ref)["metadata"].get("annotations") or {}
    return {k: v for k, v in notes.items() if k.startswith("kubectl-dr.io/")}


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return items


def running(cluster: Cluster, namespace: str, app: str) -> int:
    return sum(1 for p in pods(cluster, namespace)
               if p["metadata"].get("labels", {}).get("app") == app and not p["metadata"].get("deletionTimestamp")
               and p.get("status", {}).get("phase") == "Running")


def pods_using(cluster: Cluster, namespace: str, claim: str) -> list[str]:
    return [p["metadata"]["name"] for p in pods(cluster, namespace)
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim
                    for v in p["spec"].get("volumes") or [])]


def dr(cluster: Cluster, *args: str, context: str | None = None, timeout: float = 120, subprocess: bool = True
       ) -> CompletedProcess[str]:
    """A real process by default: scaling down waits on pods and is cut by signals in the tests below.
    Dry runs and refusals, which change nothing, pass `subprocess=False` and run in this interpreter."""
    return run_cli(f"--kubeconfig={cluster.kubeconfig}", *([f"--context={context}"] if context else []), *args,
                   timeout=timeout, subprocess=subprocess)


def claim(name: str, mode: str = "ReadWriteMany") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Mi"}}}}


def pod_spec(command: list[str], volumes: dict[str, str], grace: int = 30,
             security: dict[str, Any] | None = None) -> dict[str, Any]:
    """A busybox container mounting each claim in `volumes` (volume name → claim name)."""
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace,
        "containers": [{"name": "app", "image": "busybox", "command": command,
                        "volumeMounts": [{"name": v, "mountPath": f"/{v}"} for v in volumes]}],
        "volumes": [{"name": v, "persistentVolumeClaim": {"claimName": c}} for v, c in volumes.items()],
    }
    if security:
        spec["securityContext"] = security
    return spec


def deployment(name: str, count: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": count, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def statefulset(name: str, count: int, spec: dict[str, Any], template_claim: str = "data") -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    spec["containers"][0]["volumeMounts"].append({"name": template_claim, "mountPath": "/data"})
    # The StatefulSet controller replaces a template volume named like a claim template with the claim
    # (as the real one does). Declared only because the loopback server's pod-template validation wants
    # every volumeMount to name a template volume, which a real API server does not ask of StatefulSets.
    spec["volumes"].append({"name": template_claim, "emptyDir": {}})
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": count, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                     "volumeClaimTemplates": [{"metadata": {"name": template_claim},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Mi"}}}}]}}


@pytest.fixture()
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"scale-{secrets.token_hex(3)}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def shop(cluster: Cluster, namespace: str, command: list[str] = FAST_STOP, grace: int = 5) -> None:
    """A Deployment web (2 replicas) and a StatefulSet db (3 replicas, claims data-db-N) both mounting `shared`."""
    # No runAsUser: the loopback kubelet cannot start non-root containers when the cluster directory is
    # under a 0700 directory, as pytest's tmp_path is (bwrap: "Can't find source path …: Permission denied").
    spec = pod_spec(command, {"shared": "shared"}, grace=grace,
                    security={"fsGroup": 2000, "supplementalGroups": [3000]})
    apply(cluster, namespace, [claim("shared"), deployment("web", 2, spec), statefulset("db", 3, spec)])
    wait_until(lambda: running(cluster, namespace, "web") == 2 and running(cluster, namespace, "db") == 3,
               what="web 2/2 and db 3/3 running", cluster=cluster, namespace=namespace)


def start_scale_down(cluster: Cluster, namespace: str, claim_name: str) -> subprocess.Popen[str]:
    """Start `scale down` and return once it is waiting for the pods (its progress line says so)."""
    proc = subprocess.Popen([executable(), f"--kubeconfig={cluster.kubeconfig}", "scale", "down", claim_name,
                             "-n", namespace, "--yes", "--timeout", "5m"],
                            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("waiting for"):
            return proc
    proc.wait(10)
    raise AssertionError(f"scale down ended ({proc.returncode}) before waiting: {''.join(seen)}")


# ---- scale down and restore ------------------------------------------------------------------------------

def test_scale_down_records_and_waits_then_restore_puts_replicas_back(cluster: Cluster, namespace: str) -> None:
    shop(cluster, namespace)

    down = dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", "-o", "json")
    assert down.returncode == 0, down.stderr
    result = json.loads(down.stdout)
    scaled = {(w["kind"], w["name"]): w["originalReplicas"] for w in result["workloads"]}
    assert scaled == {("Deployment", "web"): 2, ("StatefulSet", "db"): 3}
    assert "waiting for" in down.stderr and f"kubectl dr scale restore -n {namespace}" in down.stderr
    # It returned only once no pod used the claim any more.
    assert pods_using(cluster, namespace, "shared") == []
    for ref, original in (("deployment/web", "2"), ("statefulset/db", "3")):
        assert replicas(cluster, namespace, ref) == 0
        notes = annotations(cluster, namespace, ref)
        assert set(notes) == set(ANNOTATIONS)
        assert notes["kubectl-dr.io/original-replicas"] == original
        assert notes["kubectl-dr.io/scaled-down-by"] == result["runId"]
        assert notes["kubectl-dr.io/scaled-down-at"].endswith("Z")

    dry = dr(cluster, "scale", "restore", "-n", namespace, "--dry-run=client", subprocess=False)
    assert dry.returncode == 0, dry.stderr
    assert {tuple(line.split()[1:]) for line in dry.stdout.splitlines()[1:]} == {
        ("Deployment", "web", "2", "would", "restore"), ("StatefulSet", "db", "3", "would", "restore")}
    assert "replicas would be set back to 2 (client dry run)" in dry.stderr
    assert replicas(cluster, namespace, "deployment/web") == 0

    restore = dr(cluster, "scale", "restore", "-n", namespace, "-o", "json")
    assert restore.returncode == 0, restore.stderr
    items = {(i["kind"], i["name"]): (i["replicas"], i["action"]) for i in json.loads(restore.stdout)["items"]}
    assert items == {("Deployment", "web"): (2, "restored"), ("StatefulSet", "db"): (3, "restored")}
    assert replicas(cluster, namespace, "deployment/web") == 2
    assert replicas(cluster, namespace, "statefulset/db") == 3
    assert annotations(cluster, namespace, "deployment/web") == {}
    assert annotations(cluster, namespace, "statefulset/db") == {}
    wait_until(lambda: running(cluster, namespace, "web") == 2 and running(cluster, namespace, "db") == 3,
               what="pods back after restore")

    again = dr(cluster, "scale", "restore", "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and "nothing to restore" in again.stderr


def test_statefulset_claim_template_and_dry_run(cluster: Cluster, namespace: str) -> None:
    shop(cluster, namespace)

    plan = dr(cluster, "scale", "down", "data-db-1", "-n", namespace, "--dry-run=client", "-o", "json",
              subprocess=False)
    assert plan.returncode == 0, plan.stderr
    workloads = json.loads(plan.stdout)["workloads"]
    assert [(w["kind"], w["name"], w["replicas"]) for w in workloads] == [("StatefulSet", "db", 3)]
    assert [p["name"] for p in workloads[0]["pods"]] == ["db-1"]
    assert workloads[0]["securityContext"] == {"fsGroup": 2000, "supplementalGroups": [3000]}
    assert replicas(cluster, namespace, "statefulset/db") == 3
    assert annotations(cluster, namespace, "statefulset/db") == {}


def test_restore_keeps_replicas_someone_changed_since(cluster: Cluster, namespace: str) -> None:
    spec = pod_spec(FAST_STOP, {"d": "solo"}, grace=5)
    apply(cluster, namespace, [claim("solo"), deployment("solo", 3, spec)])
    wait_until(lambda: running(cluster, namespace, "solo") == 3, what="solo running")
    assert dr(cluster, "scale", "down", "solo", "-n", namespace, "--yes").returncode == 0
    cluster.kubectl("scale", "deployment/solo", "-n", namespace, "--replicas=1")

    recorded = annotations(cluster, namespace, "deployment/solo")
    dry = dr(cluster, "scale", "restore", "-n", namespace, "deploy/solo", "--dry-run=client", subprocess=False)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[1].split() == [namespace, "Deployment", "solo", "1", "would", "keep"]
    assert "would be left at 1 (recorded original: 3), record would be removed (client dry run)" in dry.stderr
    assert annotations(cluster, namespace, "deployment/solo") == recorded

    restore = dr(cluster, "scale", "restore", "-n", namespace, "deploy/solo", "-o", "json")
    assert restore.returncode == 0, restore.stderr
    [item] = json.loads(restore.stdout)["items"]
    assert (item["action"], item["replicas"], item["originalReplicas"]) == ("kept", 1, 3)
    assert replicas(cluster, namespace, "deployment/solo") == 1
    assert annotations(cluster, namespace, "deployment/solo") == {}


# ---- interruption ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_waiting_scales_back_and_exits_130(cluster: Cluster, namespace: str,
                                                          sig: signal.Signals) -> None:
    spec = pod_spec(SLOW_STOP, {"d": "slow"}, grace=30)
    apply(cluster, namespace, [claim("slow"), deployment("slow", 2, spec)])
    wait_until(lambda: running(cluster, namespace, "slow") == 2, what="slow running")

    proc = start_scale_down(cluster, namespace, "slow")
    assert replicas(cluster, namespace, "deployment/slow") == 0
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted by {sig.name}" in err
    assert replicas(cluster, namespace, "deployment/slow") == 2
    assert annotations(cluster, namespace, "deployment/slow") == {}


def test_sigkill_leaves_records_rerun_keeps_original_and_restore_recovers(cluster: Cluster, namespace: str) -> None:
    # 10 s of grace keep the pods terminating while the rerun starts and waits for them; the default 30 s
    # only made that wait longer.
    spec = pod_spec(SLOW_STOP, {"d": "slow"}, grace=10)
    apply(cluster, namespace, [claim("slow"), deployment("slow", 2, spec)])
    wait_until(lambda: running(cluster, namespace, "slow") == 2, what="slow running")

    proc = start_scale_down(cluster, namespace, "slow")
    proc.kill()
    proc.wait(10)
    assert replicas(cluster, namespace, "deployment/slow") == 0
    first = annotations(cluster, namespace, "deployment/slow")
    assert first["kubectl-dr.io/original-replicas"] == "2"

    # A rerun finds the workload at 0 with a record: it must keep 2 as the original, not record 0.
    rerun = dr(cluster, "scale", "down", "slow", "-n", namespace, "--yes", "--timeout", "2m", "-o", "json")
    assert rerun.returncode == 0, rerun.stderr
    [item] = json.loads(rerun.stdout)["workloads"]
    assert (item["originalReplicas"], item["foundReplicas"]) == (2, 0)
    second = annotations(cluster, namespace, "deployment/slow")
    assert second["kubectl-dr.io/original-replicas"] == "2"
    assert second["kubectl-dr.io/scaled-down-by"] != first["kubectl-dr.io/scaled-down-by"]

    restore = dr(cluster, "scale", "restore", "-A")
    assert restore.returncode == 0, restore.stderr
    assert namespace in restore.stdout and "restored" in restore.stdout
    assert replicas(cluster, namespace, "deployment/slow") == 2
    assert annotations(cluster, namespace, "deployment/slow") == {}


# ---- refusals and errors --------------------------------------------------------------------------------

def test_bare_pod_and_daemonset_consumers_are_refused_and_nothing_changes(cluster: Cluster, namespace: str) -> None:
    spec = pod_spec(FAST_STOP, {"d": "shared"}, grace=5)
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"}, "spec": spec}
    daemons = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                        "template": {"metadata": {"labels": {"app": "agent"}},
                                     "spec": pod_spec(FAST_STOP, {"d": "logs"}, grace=5)}}}
    apply(cluster, namespace, [claim("shared"), claim("logs"), deployment("web", 1, spec), bare, daemons])
    wait_until(lambda: running(cluster, namespace, "web") == 1, what="web running")

    refused = dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", subprocess=False)
    assert refused.returncode == 1
    assert "Pod/debug: it is a bare pod" in refused.stderr and "nothing was changed" in refused.stderr
    assert "Deployment/web" not in refused.stderr.split("nothing was changed")[1]

    refused = dr(cluster, "scale", "down", "logs", "-n", namespace, "--yes", subprocess=False)
    assert refused.returncode == 1
    assert "DaemonSet/agent: kubectl dr cannot stop a DaemonSet" in refused.stderr

    assert replicas(cluster, namespace, "deployment/web") == 1
    assert annotations(cluster, namespace, "deployment/web") == {}
    assert get(cluster, namespace, "pod/debug")["metadata"].get("deletionTimestamp") is None


def test_without_terminal_and_without_yes_it_refuses(cluster: Cluster, namespace: str) -> None:
    spec = pod_spec(FAST_STOP, {"d": "solo"}, grace=5)
    apply(cluster, namespace, [claim("solo"), deployment("solo", 1, spec)])
    result = dr(cluster, "scale", "down", "solo", "-n", namespace, timeout=30, subprocess=False)
    assert result.returncode == 1
    # One wording for every destructive step; counts in words ("1 replica", not "1 replicas").
    assert (f'error: refusing to scale down Deployment/solo (1 replica) in namespace "{namespace}" to stop their '
            'use of claim "solo" without confirmation: there is no terminal to ask on and --yes was not given\n'
            ) in result.stderr, result.stderr
    assert replicas(cluster, namespace, "deployment/solo") == 1
    assert annotations(cluster, namespace, "deployment/solo") == {}


def test_unknown_claim_and_unknown_namespace(cluster: Cluster, namespace: str) -> None:
    result = dr(cluster, "scale", "down", "nope", "-n", namespace, "--yes", subprocess=False)
    assert result.returncode == 1
    assert f'persistentvolumeclaims "nope" not found in namespace "{namespace}"' in result.stderr
    result = dr(cluster, "scale", "down", "nope", "-n", "no-such-namespace", "--yes", subprocess=False)
    assert result.returncode == 1
    assert 'namespaces "no-such-namespace" not found' in result.stderr
    result = dr(cluster, "scale", "restore", "-n", "no-such-namespace", subprocess=False)
    assert result.returncode == 1
    assert 'namespaces "no-such-namespace" not found' in result.stderr


def test_user_without_patch_rights_gets_403_and_nothing_changes(cluster: Cluster, namespace: str) -> None:
    shop(cluster, namespace)
    read = ["get", "list", "watch"]
    policy = {"users": {LIMITED_USER: [
        {"apiGroups": [""], "namespaces": [namespace], "verbs": read,
         "resources": ["pods", "persistentvolumeclaims", "namespaces", "replicationcontrollers"]},
        {"apiGroups": ["apps"], "namespaces": [namespace], "verbs": read,
         "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"]},
        {"apiGroups": ["batch"], "namespaces": [namespace], "verbs": read, "resources": ["jobs", "cronjobs"]},
        # May patch StatefulSets but not Deployments: the first patch lands, the second is refused, and
        # the first must be undone.
        {"apiGroups": ["apps"], "namespaces": [namespace], "verbs": ["patch"], "resources": ["statefulsets"]},
    ]}}
    cluster.write_policy(policy)
    try:
        result = dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", context=LIMITED_CONTEXT,
                    subprocess=False)
    finally:
        cluster.write_policy(DEFAULT_POLICY)
    assert result.returncode == 1, result.stderr
    assert "Error from server (Forbidden)" in result.stderr
    assert f'cannot patch resource "deployments" in API group "apps" in the namespace "{namespace}"' in result.stderr
    assert replicas(cluster, namespace, "statefulset/db") == 3
    assert replicas(cluster, namespace, "deployment/web") == 2
    assert annotations(cluster, namespace, "statefulset/db") == {}
    assert annotations(cluster, namespace, "deployment/web") == {}


def test_autoscaler_that_pauses_at_zero_is_only_a_note(cluster: Cluster, namespace: str) -> None:
    spec = pod_spec(FAST_STOP, {"d": "solo"}, grace=5)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "solo"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "solo"},
                    "minReplicas": 1, "maxReplicas": 3}}
    apply(cluster, namespace, [claim("solo"), deployment("solo", 1, spec), hpa])
    wait_until(lambda: running(cluster, namespace, "solo") == 1, what="solo running")
    result = dr(cluster, "scale", "down", "solo", "-n", namespace, "--yes")
    assert result.returncode == 0, result.stderr
    assert "HorizontalPodAutoscaler solo pauses while replicas are 0" in result.stderr
    assert replicas(cluster, namespace, "deployment/solo") == 0


def test_a_namespace_admin_can_undo_a_run(cluster: Cluster, namespace: str) -> None:
    """An admin of this namespace alone (no cluster-wide read of Namespace objects) scales down and back."""
    shop(cluster, namespace)
    policy = {"users": {LIMITED_USER: [
        {"apiGroups": ["", "apps", "batch", "autoscaling"], "namespaces": [namespace], "verbs": ["*"],
         "resources": ["*"]},
    ]}}
    cluster.write_policy(policy)
    try:
        assert cluster.kubectl("get", "namespace", namespace, limited=True, check=False).returncode != 0
        down = dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", context=LIMITED_CONTEXT)
        assert down.returncode == 0, down.stderr
        assert replicas(cluster, namespace, "deployment/web") == 0
        back = dr(cluster, "scale", "restore", "-n", namespace, context=LIMITED_CONTEXT)
        assert back.returncode == 0, back.stderr
    finally:
        cluster.write_policy(DEFAULT_POLICY)
    assert replicas(cluster, namespace, "deployment/web") == 2
    assert annotations(cluster, namespace, "deployment/web") == {}


def test_restore_of_a_workload_that_does_not_exist_is_not_found(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, deployment("idle", 0, pod_spec(FAST_STOP, {})))
    # A workload that exists without a record: nothing to do, and that is fine (idempotent).
    present = dr(cluster, "scale", "restore", "-n", namespace, "idle", subprocess=False)
    assert present.returncode == 0, present.stderr
    assert "idle: no replicas recorded" in present.stderr
    # One that does not exist is a mistake in the name, said in kubectl's words.
    for args, expected in ((["web"], 'deployments.apps "web" not found'),
                           (["deploy/web"], 'deployments.apps "web" not found'),
                           (["sts/idle"], 'statefulsets.apps "idle" not found'),
                           (["idle", "rc/web"], 'replicationcontrollers "web" not found')):
        result = dr(cluster, "scale", "restore", "-n", namespace, *args, subprocess=False)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stdout == ""
        assert f"Error from server (NotFound): {expected}" in result.stderr, result.stderr
        assert "nothing to restore" not in result.stderr
    everywhere = dr(cluster, "scale", "restore", "-A", f"web-{namespace}", subprocess=False)
    assert everywhere.returncode == 1
    assert f'"web-{namespace}" not found in any namespace' in everywhere.stderr
    assert dr(cluster, "scale", "restore", "-A", "deploy/idle", subprocess=False).returncode == 0


def test_a_run_id_whose_record_another_run_took_over_is_refused_naming_that_run(cluster: Cluster,
                                                                                namespace: str) -> None:
    # A second `scale down` takes the record over with its own run ID; `--run-id FIRST` then used to say
    # "nothing to restore" (exit 0) and leave the workloads at 0.
    shop(cluster, namespace)
    first = json.loads(dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", "-o", "json").stdout)["runId"]
    second = json.loads(dr(cluster, "scale", "down", "shared", "-n", namespace, "--yes", "-o", "json").stdout)["runId"]
    assert first != second
    refused = dr(cluster, "scale", "restore", "-n", namespace, "--run-id", first, subprocess=False)
    assert refused.returncode == 1, refused.stderr
    assert f"no workload in namespace \"{namespace}\" has a record of run {first}" in refused.stderr
    assert f"Deployment/web (run {second})" in refused.stderr and f"--run-id {second}" in refused.stderr
    assert replicas(cluster, namespace, "deployment/web") == 0  # nothing changed
    restored = dr(cluster, "scale", "restore", "-n", namespace, "--run-id", second)
    assert restored.returncode == 0, restored.stderr
    assert replicas(cluster, namespace, "deployment/web") == 2 and replicas(cluster, namespace, "statefulset/db") == 3
