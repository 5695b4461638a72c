"""Which pods and templates use a claim, the securityContext a rescue pod copies, and autoscalers."""

from __future__ import annotations

from typing import Any

from kubectl_dr.workloads.autoscalers import Autoscalers
from kubectl_dr.workloads.consumers import Consumer, claim_security_context, security_context_conflicts
from kubectl_dr.workloads.security import effective_security_context
from kubectl_dr.workloads.specs import (
    consumer_pod_spec,
    pod_uses_claim,
    statefulset_claim_ordinal,
    template_uses_claim,
)

Json = dict[str, Any]


def spec_with(claim: str, *, pod_sc: Json | None = None, container_sc: Json | None = None) -> Json:
    return {
        "securityContext": pod_sc or {},
        "containers": [
            {"name": "sidecar", "image": "busybox", "securityContext": {"runAsUser": 7}},
            {"name": "app", "image": "busybox", "securityContext": container_sc or {},
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}, {"name": "tmp", "emptyDir": {}}],
    }


def statefulset(name: str = "db") -> Json:
    return {"kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": 3, "template": {"spec": {
                "securityContext": {"fsGroup": 2000},
                "containers": [{"name": "app", "image": "busybox", "securityContext": {"runAsUser": 999},
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}]}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}


def test_pods_that_finished_do_not_use_the_claim_but_terminating_ones_do() -> None:
    pod = {"metadata": {"name": "p"}, "spec": spec_with("c"), "status": {"phase": "Running"}}
    assert pod_uses_claim(pod, "c") and not pod_uses_claim(pod, "other")
    assert pod_uses_claim({**pod, "metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"}}, "c")
    assert not pod_uses_claim({**pod, "status": {"phase": "Succeeded"}}, "c")
    assert not pod_uses_claim({**pod, "status": {"phase": "Failed"}}, "c")


def test_statefulset_claim_names() -> None:
    sts = statefulset()
    assert statefulset_claim_ordinal(sts, "data-db-0") == 0
    assert statefulset_claim_ordinal(sts, "data-db-12") == 12
    for other in ("data-db-", "data-db-01", "data-db-x", "data-dbx-0", "logs-db-0", "data-db-0-1"):
        assert statefulset_claim_ordinal(sts, other) is None, other
    assert template_uses_claim(sts, "data-db-7")
    assert template_uses_claim({"kind": "CronJob", "metadata": {"name": "n"}, "spec": {"jobTemplate": {
        "spec": {"template": {"spec": spec_with("c")}}}}}, "c")


def test_container_uid_overrides_the_pods_and_only_the_mounting_container_counts() -> None:
    spec = spec_with("c", pod_sc={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000,
                                  "supplementalGroups": [3000], "fsGroupChangePolicy": "OnRootMismatch",
                                  "runAsNonRoot": True},
                     container_sc={"runAsUser": 1001})
    assert effective_security_context(spec, "c") == {
        "runAsUser": 1001, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroups": [3000],
        "fsGroupChangePolicy": "OnRootMismatch"}
    assert effective_security_context(spec_with("c"), "c") == {}


def test_statefulset_claim_template_gets_its_volume_for_the_security_context() -> None:
    sts = statefulset()
    spec = consumer_pod_spec(sts, "data-db-1")
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}} in spec["volumes"]
    assert effective_security_context(spec, "data-db-1") == {"fsGroup": 2000, "runAsUser": 999}


def consumer(kind: str, name: str, spec: Json) -> Consumer:
    return Consumer(kind=kind, namespace="shop", name=name, claim="c", replicas=1, pod_spec=spec)


def test_first_consumer_with_a_security_context_wins_and_conflicts_are_reported() -> None:
    sts = consumer("StatefulSet", "db", spec_with("c", pod_sc={"fsGroup": 2000}))
    job = consumer("Job", "backup", spec_with("c", container_sc={"runAsUser": 0}))
    plain = consumer("Deployment", "plain", spec_with("c"))
    assert claim_security_context([sts, job]) == {"fsGroup": 2000}
    assert claim_security_context([plain, job]) == {"runAsUser": 0}
    assert claim_security_context([plain]) is None
    conflicts = security_context_conflicts([sts, job])
    assert len(conflicts) == 1 and conflicts[0].startswith("Job/backup")


def hpa(name: str, min_replicas: int | None, owner: str | None = None) -> Json:
    meta: Json = {"name": name}
    if owner:
        meta["ownerReferences"] = [{"kind": "ScaledObject", "name": owner, "apiVersion": "keda.sh/v1alpha1"}]
    spec: Json = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {"metadata": meta, "spec": spec}


def test_autoscalers_pause_at_zero_unless_they_scale_from_zero() -> None:
    blocking, notes = Autoscalers([hpa("web", None)]).verdict("Deployment", "web")
    assert blocking is None and "pauses while replicas are 0" in notes[0]
    blocking, _ = Autoscalers([hpa("web", 0)]).verdict("Deployment", "web")
    assert blocking is not None and "minReplicas 0" in blocking
    blocking, _ = Autoscalers([hpa("keda-hpa-web", 1, owner="web")]).verdict("Deployment", "web")
    assert blocking is not None and "KEDA ScaledObject web" in blocking
    assert Autoscalers([hpa("web", 0)]).verdict("StatefulSet", "web") == (None, [])
    blocking, notes = Autoscalers(unavailable="Forbidden").verdict("Deployment", "web")
    assert blocking is None and "could not check" in notes[0]
