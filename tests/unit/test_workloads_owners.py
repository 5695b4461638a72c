"""Walking ownerReferences from a pod to the workload a person would scale, on plain dicts."""

from __future__ import annotations

from typing import Any

from kubectl_dr.workloads import kinds
from kubectl_dr.workloads.consumers import unstoppable_reason
from kubectl_dr.workloads.owners import climb

Json = dict[str, Any]


def obj(kind: str, name: str, owner: Json | None = None, uid: str | None = None) -> Json:
    meta: Json = {"name": name, "namespace": "shop", "uid": uid or f"uid-{kind}-{name}"}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"kind": kind, "metadata": meta, "spec": {}}


def ref(kind: str, name: str, api_version: str = "apps/v1", controller: bool = True) -> Json:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{kind}-{name}",
            "controller": controller}


def store(*objects: Json) -> Any:
    table = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    return lambda kind, name: table.get((kind.kind, name))


def test_pod_of_a_deployment_climbs_through_its_replicaset() -> None:
    deploy = obj("Deployment", "web")
    rs = obj("ReplicaSet", "web-5d8f", ref("Deployment", "web"))
    pod = obj("Pod", "web-5d8f-abcde", ref("ReplicaSet", "web-5d8f"))
    top = climb(kinds.POD, pod, store(deploy, rs))
    assert (top.kind, top.name, top.manager) == (kinds.DEPLOYMENT, "web", None)
    assert unstoppable_reason(top, "shop") is None


def test_statefulset_daemonset_and_bare_pod() -> None:
    sts = obj("StatefulSet", "db")
    ds = obj("DaemonSet", "agent")
    lookup = store(sts, ds)
    assert climb(kinds.POD, obj("Pod", "db-0", ref("StatefulSet", "db")), lookup).kind is kinds.STATEFULSET
    top = climb(kinds.POD, obj("Pod", "agent-x", ref("DaemonSet", "agent")), lookup)
    assert top.kind is kinds.DAEMONSET
    assert "cannot stop a DaemonSet" in (unstoppable_reason(top, "shop") or "")
    bare = climb(kinds.POD, obj("Pod", "debug"), lookup)
    assert (bare.kind, bare.name) == (kinds.POD, "debug")
    assert "bare pod" in (unstoppable_reason(bare, "shop") or "")


def test_job_of_a_cronjob_is_the_cronjob() -> None:
    cron = obj("CronJob", "nightly")
    job = obj("Job", "nightly-2891", ref("CronJob", "nightly", "batch/v1"))
    pod = obj("Pod", "nightly-2891-x", ref("Job", "nightly-2891", "batch/v1"))
    top = climb(kinds.POD, pod, store(cron, job))
    assert (top.kind, top.name) == (kinds.CRONJOB, "nightly")
    assert "suspend" in (unstoppable_reason(top, "shop") or "")
    lone = climb(kinds.POD, pod, store(obj("Job", "nightly-2891")))
    assert lone.kind is kinds.JOB and "cannot stop a Job" in (unstoppable_reason(lone, "shop") or "")


def test_a_replicaset_of_a_foreign_controller_stops_the_walk_and_blocks() -> None:
    # An Argo Rollout owns ReplicaSets directly: scaling the ReplicaSet would be undone by it.
    rs = obj("ReplicaSet", "shop-6c9", ref("Rollout", "shop", "argoproj.io/v1alpha1"))
    pod = obj("Pod", "shop-6c9-x", ref("ReplicaSet", "shop-6c9"))
    top = climb(kinds.POD, pod, store(rs))
    assert top.kind is kinds.REPLICASET and top.manager is not None
    reason = unstoppable_reason(top, "shop") or ""
    assert "Rollout/shop (argoproj.io/v1alpha1)" in reason and "stop it through that controller" in reason


def test_a_kind_we_know_in_another_group_is_foreign() -> None:
    pod = obj("Pod", "x", ref("Deployment", "web", "example.com/v1"))
    top = climb(kinds.POD, pod, store(obj("Deployment", "web")))
    assert top.kind is kinds.POD and top.manager is not None and not top.manager_missing


def test_an_operator_managed_statefulset_blocks() -> None:
    sts = obj("StatefulSet", "pg", ref("Postgres", "main", "acid.zalan.do/v1"))
    top = climb(kinds.POD, obj("Pod", "pg-0", ref("StatefulSet", "pg")), store(sts))
    assert top.kind is kinds.STATEFULSET and "Postgres/main" in (unstoppable_reason(top, "shop") or "")


def test_owner_gone_or_replaced() -> None:
    pod = obj("Pod", "web-5d8f-abcde", ref("ReplicaSet", "web-5d8f"))
    gone = climb(kinds.POD, pod, store())
    assert gone.kind is kinds.POD and gone.manager_missing
    assert "no longer exists" in (unstoppable_reason(gone, "shop") or "")
    # Same name, other uid: the pod belonged to an earlier ReplicaSet of that name.
    replaced = climb(kinds.POD, pod, store(obj("ReplicaSet", "web-5d8f", uid="another")))
    assert replaced.manager_missing


def test_non_controller_owner_references_are_not_followed() -> None:
    pod = obj("Pod", "x", ref("ReplicaSet", "rs", controller=False))
    assert climb(kinds.POD, pod, store(obj("ReplicaSet", "rs"))).kind is kinds.POD
