"""Object lifecycle semantics other parts rely on: graceful pod deletion, finalizers, namespace
termination, binding, events, deletecollection, 405s, Table options and watch bookmarks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.api.errors import ApiError
from tests.cluster.api.store import Store
from tests.cluster.api.testing import ApiHarness


@pytest.fixture
def store(api: ApiHarness) -> Store:  # per test: a restart replaces the harness's Store
    assert api.store is not None
    return api.store


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_graceful_deletion_of_bound_pods(api: ApiHarness, store: Store) -> None:
    api.run(store.create("pods", _pod("graceful", terminationGracePeriodSeconds=20)))
    bound = api.run(store.bind("default", "graceful", "node-a"))
    assert bound["spec"]["nodeName"] == "node-a"
    with pytest.raises(ApiError) as exc:
        api.run(store.bind("default", "graceful", "node-b"))
    assert exc.value.code == 409
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/pods/graceful")
    pod = json.loads(raw)
    assert status == 200  # still there (the kubelet has to stop it first), and still 200 as upstream
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 20 and pod["metadata"]["deletionTimestamp"]
    # A shorter grace period shortens it; a longer one does not extend it.
    api.request("DELETE", "/api/v1/namespaces/default/pods/graceful", {"gracePeriodSeconds": 5})
    api.request("DELETE", "/api/v1/namespaces/default/pods/graceful", {"gracePeriodSeconds": 60})
    assert api.run(store.get("pods", "default", "graceful"))["metadata"]["deletionGracePeriodSeconds"] == 5
    api.run(store.delete("pods", "default", "graceful", grace_period_seconds=0))  # the kubelet's last word
    status, _, _ = api.request("GET", "/api/v1/namespaces/default/pods/graceful")
    assert status == 404


def test_unbound_pods_are_deleted_at_once(api: ApiHarness, store: Store) -> None:
    api.run(store.create("pods", _pod("unbound")))
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/pods/unbound")
    assert status == 200
    assert json.loads(raw)["metadata"]["name"] == "unbound"  # pods answer with the deleted object
    assert api.request("GET", "/api/v1/namespaces/default/pods/unbound")[0] == 404


def test_binding_subresource(api: ApiHarness, store: Store) -> None:
    api.run(store.create("pods", _pod("to-bind")))
    status, _, raw = api.request("POST", "/api/v1/namespaces/default/pods/to-bind/binding", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "to-bind"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-x"}})
    assert status == 201, raw
    pod = api.run(store.get("pods", "default", "to-bind"))
    assert pod["spec"]["nodeName"] == "node-x"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"])


def test_finalizers_hold_deletion_until_removed(api: ApiHarness, store: Store) -> None:
    api.run(store.create("configmaps", {"metadata": {"name": "held", "namespace": "default",
                                                     "finalizers": ["example.com/hold"]}}))
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/held")
    assert status == 200 and json.loads(raw)["metadata"]["deletionTimestamp"]
    api.run(store.mutate("configmaps", "default", "held",
                         lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}}))
    assert api.request("GET", "/api/v1/namespaces/default/configmaps/held")[0] == 404


def _cm(api: ApiHarness, store: Store, name: str, finalizers: list[str] | None = None) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if finalizers:
        meta["finalizers"] = finalizers
    api.run(store.create("configmaps", {"metadata": meta}))


@pytest.mark.parametrize(("query", "body", "finalizers"), [
    ("?propagationPolicy=Orphan", None, ["orphan"]),
    ("", {"propagationPolicy": "Foreground"}, ["foregroundDeletion"]),
    ("?orphanDependents=true", None, ["orphan"]),
])
def test_propagation_policy_sets_the_gc_finalizer(api: ApiHarness, store: Store, query: str,
                                                  body: dict[str, Any] | None, finalizers: list[str]) -> None:
    name = f"prop-{len(query)}-{len(json.dumps(body))}"
    _cm(api, store, name)
    status, _, raw = api.request("DELETE", f"/api/v1/namespaces/default/configmaps/{name}{query}", body)
    assert status == 200, raw  # 200 with the object that stays, as kube-apiserver answers
    meta = json.loads(raw)["metadata"]
    assert meta["finalizers"] == finalizers
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    # The garbage collector's part: removing the finalizer removes the object.
    api.run(store.mutate("configmaps", "default", name,
                         lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}}))
    assert api.request("GET", f"/api/v1/namespaces/default/configmaps/{name}")[0] == 404


def test_propagation_replaces_the_other_gc_finalizer_and_keeps_others(api: ApiHarness, store: Store) -> None:
    _cm(api, store, "swap", ["example.com/hold", "orphan"])
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/swap?propagationPolicy=Foreground")
    assert status == 200
    assert json.loads(raw)["metadata"]["finalizers"] == ["example.com/hold", "foregroundDeletion"]
    # Background takes both GC finalizers away; the foreign one still holds the object.
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/swap",
                                 {"propagationPolicy": "Background"})
    assert json.loads(raw)["metadata"]["finalizers"] == ["example.com/hold"]
    # The deprecated orphanDependents=false is the one case answered with 202.
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/swap",
                                 {"orphanDependents": False})
    assert status == 202
    api.run(store.mutate("configmaps", "default", "swap",
                         lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}}))


def test_background_without_finalizers_deletes_at_once(api: ApiHarness, store: Store) -> None:
    _cm(api, store, "bg")
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/bg?propagationPolicy=Background")
    assert status == 200 and json.loads(raw)["status"] == "Success"
    assert api.request("GET", "/api/v1/namespaces/default/configmaps/bg")[0] == 404


def test_unsupported_propagation_policy(api: ApiHarness, store: Store) -> None:
    _cm(api, store, "odd")
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps/odd?propagationPolicy=Later")
    assert status == 422
    assert json.loads(raw)["message"] == ('DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                          'value: "Later": supported values: "Foreground", "Background", "Orphan", '
                                          '"nil"')


def test_orphan_on_a_terminating_pod_waits_for_the_kubelet(api: ApiHarness, store: Store) -> None:
    api.run(store.create("pods", _pod("orphan-pod", terminationGracePeriodSeconds=30)))
    api.run(store.bind("default", "orphan-pod", "node-a"))
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/pods/orphan-pod?propagationPolicy=Orphan")
    meta = json.loads(raw)["metadata"]
    assert status == 200 and meta["finalizers"] == ["orphan"] and meta["deletionGracePeriodSeconds"] == 30
    # The GC drops its finalizer at once; the pod still waits for its kubelet (ShouldDeleteDuringUpdate).
    api.run(store.mutate("pods", "default", "orphan-pod",
                         lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}}))
    assert api.request("GET", "/api/v1/namespaces/default/pods/orphan-pod")[0] == 200
    api.run(store.delete("pods", "default", "orphan-pod", grace_period_seconds=0))
    assert api.request("GET", "/api/v1/namespaces/default/pods/orphan-pod")[0] == 404


def test_namespace_termination_and_removal(api: ApiHarness, store: Store) -> None:
    api.run(store.create("namespaces", {"metadata": {"name": "doomed"}}))
    ns = api.run(store.delete("namespaces", None, "doomed"))
    assert ns["status"]["phase"] == "Terminating"
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    api.run(store.delete("namespaces", None, "doomed", grace_period_seconds=0))
    assert api.request("GET", "/api/v1/namespaces/doomed")[0] == 404


def test_events_count_repeats_and_select_by_involved_object(api: ApiHarness, store: Store) -> None:
    pod = api.run(store.create("pods", _pod("noisy")))
    for _ in range(3):
        api.run(store.record_event(pod, "Warning", "FailedMount", "volume not ready", "kubelet"))
    api.run(store.record_event(pod, "Normal", "Scheduled", "assigned", "default-scheduler"))
    status, _, raw = api.request(
        "GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dnoisy,reason%3DFailedMount")
    events = json.loads(raw)["items"]
    assert status == 200 and len(events) == 1
    assert (events[0]["count"], events[0]["involvedObject"]["kind"]) == (3, "Pod")
    table = api.kubectl("get", "events", "--field-selector=involvedObject.name=noisy").stdout.splitlines()
    assert table[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any("pod/noisy" in line and "FailedMount" in line for line in table[1:])


def test_delete_collection_with_selector(api: ApiHarness, store: Store) -> None:
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        api.run(store.create("configmaps", {"metadata": {"name": f"dc-{name}", "namespace": "default",
                                                         "labels": {"team": team}}}))
    status, _, raw = api.request("DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=team%3Dx")
    assert status == 200
    assert sorted(i["metadata"]["name"] for i in json.loads(raw)["items"]) == ["dc-a", "dc-b"]
    items, _ = api.run(store.list("configmaps", "default", label_selector="team"))
    assert [i["metadata"]["name"] for i in items] == ["dc-c"]


def test_method_not_allowed(api: ApiHarness) -> None:
    status, _, raw = api.request("PUT", "/api/v1/namespaces/default/configmaps", {})
    body = json.loads(raw)
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    assert body["message"] == "the server does not allow this method on the requested resource"
    status, _, _ = api.request("POST", "/api/v1/componentstatuses", {"metadata": {"name": "x"}})
    assert status == 405


def test_table_include_object_and_columns(api: ApiHarness, store: Store) -> None:
    api.run(store.create("persistentvolumeclaims", {"metadata": {"name": "data", "namespace": "default"},
                                                    "spec": {"accessModes": ["ReadWriteOnce"],
                                                             "resources": {"requests": {"storage": "1Gi"}}}}))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/persistentvolumeclaims?includeObject=Object",
                                 headers={"Accept": accept})
    doc = json.loads(raw)
    assert (status, doc["kind"]) == (200, "Table")
    assert [c["name"] for c in doc["columnDefinitions"]] == [
        "Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass", "VolumeAttributesClass", "Age",
        "VolumeMode"]
    assert doc["rows"][0]["cells"][:2] == ["data", "Pending"]
    assert doc["rows"][0]["object"]["kind"] == "PersistentVolumeClaim"
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/persistentvolumeclaims",
                                 headers={"Accept": accept})
    assert json.loads(raw)["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    lines = api.kubectl("get", "pvc").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
                                "VOLUMEATTRIBUTESCLASS", "AGE"]


def test_watch_bookmarks_and_initial_events_end(api: ApiHarness) -> None:
    status, _, raw = api.request(
        "GET", "/api/v1/namespaces?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
               "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    events = [json.loads(line) for line in raw.decode().splitlines()]
    kinds = [e["type"] for e in events]
    assert status == 200
    assert kinds[:-1].count("ADDED") >= 4 and "BOOKMARK" in kinds
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) > 0


def _kubernetes_service_ports(api: ApiHarness) -> tuple[Any, Any, Any]:
    svc = json.loads(api.request("GET", "/api/v1/namespaces/default/services/kubernetes")[2])
    eps = json.loads(api.request("GET", "/api/v1/namespaces/default/endpoints/kubernetes")[2])
    slice_ = json.loads(api.request("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes")[2])
    assert svc["spec"]["ports"][0]["port"] == 443 and svc["spec"]["clusterIP"] == "10.96.0.1"
    assert eps["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
    assert slice_["endpoints"] == [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    return (svc["spec"]["ports"][0]["targetPort"], eps["subsets"][0]["ports"][0]["port"],
            slice_["ports"][0]["port"])


def test_kubernetes_service_points_at_the_listening_port(api: ApiHarness) -> None:
    assert api.server is not None
    assert _kubernetes_service_ports(api) == (api.server.port,) * 3
    # A restart listens on another port (0 = any free port): the reconciler follows it.
    before = api.server.port
    api.restart()
    assert api.server.port != before
    assert _kubernetes_service_ports(api) == (api.server.port,) * 3
