"""The application backup's rules on objects as the API server returns them: what is left out and why,
how objects are cleaned and mapped for a restore, and the order a restore creates them in."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_dr.apps import cleaning, mapping, ordering
from kubectl_dr.errors import UsageError
from kubectl_dr.workloads import records


def obj(kind: str, name: str, api_version: str = "v1", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "resourceVersion": "42",
            "creationTimestamp": "2026-12-01T10:00:00Z", "managedFields": [{"manager": "kubectl"}],
            **extra.pop("metadata", {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


def owned_by(kind: str, name: str) -> dict[str, Any]:
    return {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}",
                                 "controller": True}]}


def test_controller_made_objects_are_left_out_only_when_their_owner_is_backed_up() -> None:
    uids = {"uid-web-5d8f", "uid-web", "uid-db"}
    pod = obj("Pod", "web-5d8f-abcde", metadata=owned_by("ReplicaSet", "web-5d8f"), status={"phase": "Running"})
    assert "made by the ReplicaSet controller from ReplicaSet/web-5d8f" in str(cleaning.exclusion(pod, uids, set()))
    rs = obj("ReplicaSet", "web-5d8f", "apps/v1", metadata=owned_by("Deployment", "web"))
    assert "Deployment controller" in str(cleaning.exclusion(rs, uids, set()))
    revision = obj("ControllerRevision", "db-7c9", "apps/v1", metadata=owned_by("StatefulSet", "db"))
    assert cleaning.exclusion(revision, uids, set()) is not None
    orphan = obj("Pod", "lonely", metadata=owned_by("ReplicaSet", "gone"), status={"phase": "Running"})
    assert cleaning.exclusion(orphan, uids, set()) is None  # its owner is not in the backup: keep it


@pytest.mark.parametrize("item, why", [
    (obj("Event", "web.17a"), "events are a record"),
    (obj("Pod", "etcd-cp-1", metadata={"annotations": {"kubernetes.io/config.mirror": "abc"}}), "mirror pod"),
    (obj("Pod", "done", status={"phase": "Succeeded"}), "finished Pod"),
    (obj("Job", "migrate", "batch/v1", status={"conditions": [{"type": "Complete", "status": "True"}]}),
     "finished Job"),
    (obj("Secret", "web-token-x", type="kubernetes.io/service-account-token"), "service-account token"),
    (obj("EndpointSlice", "web-abc", "discovery.k8s.io/v1",
         metadata={"labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}}),
     "EndpointSlice controller"),
    (obj("Endpoints", "web"), "endpoints controller"),
    (obj("ConfigMap", "kube-root-ca.crt"), "every namespace"),
    (obj("Pod", "dr-rescue", metadata={"labels": {"app.kubernetes.io/managed-by": "kubectl-dr"}},
         status={"phase": "Running"}), "kubectl dr's own pod"),
])
def test_left_out_with_a_reason(item: dict[str, Any], why: str) -> None:
    assert why in str(cleaning.exclusion(item, set(), {"web"}))


def test_kept_objects_and_the_endpoints_of_a_service_without_selector() -> None:
    assert cleaning.exclusion(obj("Endpoints", "external-db"), set(), {"web"}) is None
    assert cleaning.exclusion(obj("Secret", "tls", type="kubernetes.io/tls"), set(), set()) is None
    assert cleaning.exclusion(obj("Job", "running", "batch/v1", status={"active": 1}), set(), set()) is None


def test_clean_removes_the_server_fields_and_keeps_status_aside() -> None:
    dep = obj("Deployment", "web", "apps/v1", spec={"replicas": 2}, status={"readyReplicas": 2},
              metadata={**owned_by("Thing", "x"), "generation": 3, "labels": {"app": "web"}})
    cleaned, status = cleaning.clean(dep)
    assert status == {"readyReplicas": 2}
    assert cleaned["metadata"] == {"name": "web", "namespace": "shop", "labels": {"app": "web"}}
    assert dep["metadata"]["uid"] == "uid-web"  # the original is untouched


def test_shape_maps_namespaces_and_classes_and_clears_what_the_target_allocates() -> None:
    maps = mapping.Mapping({"shop": "shop-dr"}, {"standard": "fast"})
    shape = lambda o: mapping.shape(cleaning.clean(o)[0], maps, "B1", static_volumes={"static-pv"},  # noqa: E731
                                    run_id="restore-B1", now="2026-12-06T10:00:00Z")
    svc = shape(obj("Service", "web", spec={"type": "NodePort", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                                            "ports": [{"port": 80, "nodePort": 30080}]}))
    assert svc["metadata"]["namespace"] == "shop-dr" and "clusterIP" not in svc["spec"]
    assert "nodePort" not in svc["spec"]["ports"][0]
    assert svc["metadata"]["annotations"][mapping.RESTORED_FROM] == "B1"
    headless = shape(obj("Service", "db", spec={"clusterIP": "None", "clusterIPs": ["None"]}))
    assert headless["spec"]["clusterIP"] == "None"
    claim = shape(obj("PersistentVolumeClaim", "data", spec={"storageClassName": "standard", "volumeName": "pv-1"},
                      metadata={"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}))
    assert claim["spec"] == {"storageClassName": "fast"}
    assert "pv.kubernetes.io/bind-completed" not in claim["metadata"]["annotations"]
    static = shape(obj("PersistentVolumeClaim", "old", spec={"volumeName": "static-pv"}))
    assert static["spec"]["volumeName"] == "static-pv"
    binding = shape(obj("RoleBinding", "b", "rbac.authorization.k8s.io/v1",
                        subjects=[{"kind": "ServiceAccount", "name": "web", "namespace": "shop"},
                                  {"kind": "ServiceAccount", "name": "x", "namespace": "other"}]))
    assert [s["namespace"] for s in binding["subjects"]] == ["shop-dr", "other"]
    namespace = shape({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "shop", "labels": {"kubernetes.io/metadata.name": "shop", "pod-security.kubernetes.io/enforce":
                                   "restricted"}}, "spec": {"finalizers": ["kubernetes"]}})
    assert namespace["metadata"]["name"] == "shop-dr" and "spec" not in namespace
    assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": "shop-dr",
                                               "pod-security.kubernetes.io/enforce": "restricted"}
    sts = shape(obj("StatefulSet", "db", "apps/v1", spec={"replicas": 3, "volumeClaimTemplates": [
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}}]}))
    assert sts["spec"]["replicas"] == 0 and sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    record = records.read_record(sts)
    assert record is not None and record.original_replicas == 3 and record.run_id == "restore-B1"
    job = shape(obj("Job", "migrate", "batch/v1", metadata={"labels": {"controller-uid": "u1", "app": "m"}},
                    spec={"selector": {"matchLabels": {"controller-uid": "u1"}},
                          "template": {"metadata": {"labels": {"controller-uid": "u1",
                                                               "batch.kubernetes.io/controller-uid": "u1"}}}}))
    assert job["metadata"]["labels"] == {"app": "m"} and "selector" not in job["spec"]
    assert job["spec"]["template"]["metadata"]["labels"] == {}


def test_order_follows_velero_then_the_rest_then_workloads() -> None:
    items = [("deployments.apps", "web"), ("backupplans.shop.example.com", "nightly"), ("services", "web"),
             ("secrets", "s"), ("customresourcedefinitions.apiextensions.k8s.io", "c"), ("namespaces", "shop"),
             ("persistentvolumeclaims", "data"), ("statefulsets.apps", "db"), ("networkpolicies.networking.k8s.io",
                                                                                "n"),
             ("pods", "bare")]
    ordered = sorted(items, key=lambda i: ordering.order_key(i[0], {"metadata": {"name": i[1]}}))
    assert [r for r, _ in ordered] == [
        "customresourcedefinitions.apiextensions.k8s.io", "namespaces", "persistentvolumeclaims", "secrets",
        "services", "backupplans.shop.example.com", "networkpolicies.networking.k8s.io", "pods",
        "deployments.apps", "statefulsets.apps"]


def test_mapping_pairs() -> None:
    assert mapping.parse_pairs("a:b, c:d", "namespace mapping") == {"a": "b", "c": "d"}
    assert mapping.parse_pairs(None, "x") == {}
    with pytest.raises(UsageError, match="invalid storage class mapping 'fast'"):
        mapping.parse_pairs("fast", "storage class mapping")


def test_claims_side_by_side_share_one_progress_display_and_ask_one_at_a_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Two claim backups at once: the first holds the (one) live display, the second counts quietly and says
    # when it starts and ends; a question still goes through the real console (and its --yes).
    from kubectl_dr.apps.backup import _SideBySide
    from kubectl_dr.errors import DrError
    from kubectl_dr.ui.console import TerminalConsole
    from kubectl_dr.ui.terminals import Terminals

    quiet = Terminals(False, False, False)
    console = _SideBySide(TerminalConsole(terminals=quiet))
    with console.progress("backup ns/a", 10) as first:
        with console.progress("backup ns/b", 10) as second:
            second.advance(2048)
            first.advance(5)
        assert second.done == 2048
    with console.progress("backup ns/c", None) as third:  # the display is free again
        third.advance(1)
    err = capsys.readouterr().err
    assert "backup ns/b: started" in err and "backup ns/b: 2.0 KiB in" in err and "(done)" in err
    assert "backup ns/a: started" not in err and "backup ns/c: started" not in err
    with pytest.raises(DrError):
        console.confirm("stop the app")
    _SideBySide(TerminalConsole(yes=True, terminals=quiet)).confirm("stop the app")


def test_a_diff_ignores_the_node_ports_a_restore_leaves_to_the_server() -> None:
    from kubectl_dr.apps.diff import comparable, compare

    def service(node_port: int, port: int = 80) -> dict[str, object]:
        return {"kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "ports": [{"port": port, "nodePort": node_port}]}}

    assert compare(comparable(service(32549)), comparable(service(30357))) == []
    # A change the restore would make is still one.
    assert [d["field"] for d in compare(comparable(service(32549, 81)), comparable(service(30357)))] == ["spec.ports"]
    # Other kinds are compared as they are.
    other = {"kind": "ConfigMap", "data": {"a": "1"}}
    assert comparable(other) is other


def test_a_backup_stores_workloads_as_they_run_when_kubectl_dr_holds_them_at_0(capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    # Its own --quiesce record silently; another run's (a --quiesce killed before it started the app again) named,
    # with the command that starts it: stored at 0 with that record, a restore would bring the app back stopped.
    from kubectl_dr.apps.backup import _as_before_scale_down
    from kubectl_dr.apps.collect import Collected
    from kubectl_dr.ui.console import TerminalConsole
    from kubectl_dr.ui.terminals import Terminals

    def held(name: str, run_id: str, original: int) -> dict[str, Any]:
        patch, _ = records.scale_down_patch(obj("Deployment", name, "apps/v1", spec={"replicas": original}),
                                            run_id=run_id, reason="namespace backup --quiesce")
        return obj("Deployment", name, "apps/v1", spec={"replicas": 0},
                   metadata={"annotations": {**patch["metadata"]["annotations"], "team": "shop"}})

    mine, killed, free = held("web", "run-now", 2), held("db", "run-killed", 3), obj("Deployment", "free", "apps/v1",
                                                                                     spec={"replicas": 0})
    _as_before_scale_down(Collected(objects=[mine, killed, free]), "run-now",
                          TerminalConsole(terminals=Terminals(False, False, False)))
    assert mine["spec"]["replicas"] == 2 and killed["spec"]["replicas"] == 3 and free["spec"]["replicas"] == 0
    assert mine["metadata"]["annotations"] == {"team": "shop"} == killed["metadata"]["annotations"]
    err = capsys.readouterr().err
    assert "web" not in err
    assert ("deployment.apps/db -n shop is held at 0 by run run-killed (namespace backup --quiesce, since" in err
            and "backed up with its recorded 3 replicas" in err and "kubectl dr scale restore -n shop" in err), err


def test_a_namespace_is_identical_only_when_its_compared_claims_are() -> None:
    """Every object equal to the backup is not enough: a claim whose contents differ makes the namespace differ
    (`identical` once said true then, and `--exit-code` would have said 0)."""
    from kubectl_dr.apps.diff import DiffResult, ObjectDiff

    objects = [ObjectDiff("ConfigMap/shop/conf", "same")]
    claim = {"name": "data", "backup": "b1", "compare": "…", "pvcDiff": {"identical": False}}
    assert not DiffResult("b1", "shop", objects, [claim]).identical
    assert DiffResult("b1", "shop", objects, [{**claim, "pvcDiff": {"identical": True}}]).identical
    not_compared = {"name": "data", "backup": "b1", "compare": "kubectl dr pvc diff data -n shop --from b1"}
    assert DiffResult("b1", "shop", objects, [not_compared]).to_dict()["identical"] is True
    assert not DiffResult("b1", "shop", [ObjectDiff("ConfigMap/shop/conf", "change")], []).identical


def test_a_key_only_the_live_object_has_is_a_difference_where_the_map_is_the_users() -> None:
    """`--existing=update` replaces the object: a ConfigMap key or a label added since the backup goes, so the
    diff shows it; what controllers write (a claim's binder, a Deployment's revision) is no difference."""
    from kubectl_dr.apps.diff import compare

    backup = {"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "web"},
                                                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
              "data": {"app.conf": "color=blue"}}
    live = {"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "web", "extra": "1"},
                                              "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "data": {"app.conf": "color=blue", "new": "x"}, "spec": {"defaulted": True}}
    assert compare(backup, live) == [{"field": "data.new", "backup": None, "live": "x"},
                                     {"field": "metadata.labels.extra", "backup": None, "live": "1"}]
