"""What a namespace restore may create is decided by the cluster's discovery and the tool's table, never by the
backup: a repository writer cannot add a ClusterRoleBinding, another namespace's objects, or replace a
cluster-scoped object (found by a review with a crafted backup)."""

from __future__ import annotations

from kubectl_dr.apps.resources import ResourceType
from kubectl_dr.apps.restore import Step, _decide, cluster_wide, not_the_namespaces

VERBS = frozenset({"create", "get", "list"})
SECRET = ResourceType("", "v1", "secrets", "Secret", True, VERBS)
NAMESPACE = ResourceType("", "v1", "namespaces", "Namespace", False, VERBS)
CRB = ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, VERBS)
SC = ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, VERBS)
PV = ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, VERBS)


def obj(kind: str, name: str, namespace: str | None = None, **rest: object) -> dict[str, object]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, **rest}


def test_only_the_namespaces_objects_and_recorded_cluster_kinds_pass() -> None:
    recorded = {"StorageClass/fast", "PersistentVolume/pv-1"}
    assert not_the_namespaces(obj("Secret", "s", "shop"), SECRET, "shop", recorded) is None
    assert not_the_namespaces(obj("Namespace", "shop"), NAMESPACE, "shop", recorded) is None
    assert not_the_namespaces(obj("StorageClass", "fast"), SC, "shop", recorded) is None
    assert not_the_namespaces(obj("PersistentVolume", "pv-1"), PV, "shop", recorded) is None
    refused = {
        "another namespace's Secret": (obj("Secret", "s", "kube-system"), SECRET),
        "another namespace": (obj("Namespace", "kube-system"), NAMESPACE),
        "a kind never recorded, even when listed": (obj("ClusterRoleBinding", "x"), CRB),
        "a kind never recorded, carrying the namespace": (obj("ClusterRoleBinding", "x", "shop"), CRB),
        "a recorded kind not in the record": (obj("StorageClass", "other"), SC),
        "a cluster-scoped object carrying a namespace": (obj("StorageClass", "fast", "shop"), SC),
    }
    for what, (o, rtype) in refused.items():
        assert not_the_namespaces(o, rtype, "shop", recorded | {"ClusterRoleBinding/x"}) is not None, what


def test_a_present_cluster_scoped_object_is_never_replaced_and_new_ones_are_named() -> None:
    live = obj("StorageClass", "fast")
    step = _decide(obj("StorageClass", "fast"), SC, live, "update", "b1", cluster_scoped=True)
    assert step.action == "skip"
    steps = [Step(obj("StorageClass", "fast"), SC, "create"), Step(obj("Secret", "s", "shop"), SECRET, "create"),
             Step(obj("Namespace", "shop"), NAMESPACE, "create"),
             Step(obj("PersistentVolume", "pv-1", spec={"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/"}}),
                  PV, "create")]
    assert cluster_wide(steps) == ["StorageClass/fast", "PersistentVolume/pv-1 (hostPath /)"]


def test_a_claim_the_record_names_must_be_a_name_and_its_backup_an_id() -> None:
    """Each claim goes into an API path and a `pvc restore`: "/" or ".." in a crafted record would reach
    another object (a Secret's path), so the record is refused."""
    from kubectl_dr.apps.source import _claim_problem

    good = {"namespace": "shop", "name": "data-db-0", "backup": "20261208T003511Z-pvc-app-shop-data-db-0"}
    assert _claim_problem(good) is None
    for changed in ({"name": "../../secrets/token"}, {"name": "a/b"}, {"namespace": "kube-system/x"},
                    {"name": "a..b"}, {"backup": "../other"}, {"name": 7}):
        assert _claim_problem({**good, **changed}) is not None, changed
    assert _claim_problem("data") is not None
