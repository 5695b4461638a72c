"""CRUD through the Python client and raw HTTP: objects, Status bodies, conflicts, selectors, paging."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.api.testing import ApiHarness


@pytest.fixture(scope="module")
def core(api: ApiHarness) -> client.CoreV1Api:
    return client.CoreV1Api(api.client())


def _pod(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "1d"]}]}}


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_bootstrap_namespaces_and_defaults(core: client.CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    created = core.create_namespaced_pod("default", _pod("defaults"))
    spec = created.spec
    assert (spec.restart_policy, spec.termination_grace_period_seconds, spec.dns_policy) == (
        "Always", 30, "ClusterFirst")
    assert spec.service_account_name == "default"
    assert spec.containers[0].image_pull_policy == "IfNotPresent"
    assert spec.containers[0].termination_message_path == "/dev/termination-log"
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.status.phase == "Pending"
    assert int(created.metadata.resource_version) > 0


def test_not_found_and_already_exists_bodies(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("missing", "default")
    assert exc.value.status == 404
    assert _status(exc.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "missing" not found', "reason": "NotFound",
        "details": {"name": "missing", "kind": "pods"}, "code": 404}
    core.create_namespaced_pod("default", _pod("twice"))
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("default", _pod("twice"))
    assert exc.value.status == 409
    body = _status(exc.value)
    assert (body["reason"], body["message"]) == ("AlreadyExists", 'pods "twice" already exists')
    assert body["details"] == {"name": "twice", "kind": "pods"}


def test_conflict_on_stale_resource_version(core: client.CoreV1Api) -> None:
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "cas"}, "data": {"a": "1"}})
    stale = cm.metadata.resource_version
    cm.data = {"a": "2"}
    updated = core.replace_namespaced_config_map("cas", "default", cm)
    assert int(updated.metadata.resource_version) > int(stale)
    cm.data = {"a": "3"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cas", "default", cm)
    body = _status(exc.value)
    assert exc.value.status == 409
    assert body["reason"] == "Conflict"
    assert body["message"] == ('Operation cannot be fulfilled on configmaps "cas": the object has been modified; '
                               "please apply your changes to the latest version and try again")
    assert core.read_namespaced_config_map("cas", "default").data == {"a": "2"}


def test_invalid_name_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("default", _pod("Bad_Name"))
    body = _status(exc.value)
    assert exc.value.status == 422
    assert body["reason"] == "Invalid"
    assert body["message"].startswith('Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric")
    assert body["details"]["kind"] == "Pod"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["details"]["causes"][0]["reason"] == "FieldValueInvalid"


def test_missing_and_terminating_namespace(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("nowhere", _pod("p"))
    assert exc.value.status == 404
    assert _status(exc.value)["message"] == 'namespaces "nowhere" not found'
    core.create_namespace({"metadata": {"name": "leaving"}})
    core.delete_namespace("leaving")
    assert core.read_namespace("leaving").status.phase == "Terminating"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("leaving", _pod("p"))
    body = _status(exc.value)
    assert exc.value.status == 403
    assert body["message"] == ('pods "p" is forbidden: unable to create new content in namespace leaving '
                               "because it is being terminated")


def test_generate_name_and_dry_run(core: client.CoreV1Api) -> None:
    pod = _pod("")
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "gen-"
    created = core.create_namespaced_pod("default", pod)
    assert created.metadata.name.startswith("gen-") and len(created.metadata.name) == 9
    dry = core.create_namespaced_pod("default", _pod("dry-only"), dry_run="All")
    assert dry.metadata.name == "dry-only"
    with pytest.raises(ApiException):
        core.read_namespaced_pod("dry-only", "default")


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "sel"}})
    for name, tier, track in (("a", "web", "stable"), ("b", "web", "canary"), ("c", "db", "stable")):
        core.create_namespaced_pod("sel", _pod(name, tier=tier, track=track))
    core.create_namespaced_pod("sel", _pod("d"))

    def names(**kwargs: str) -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod("sel", **kwargs).items)

    assert names(label_selector="tier=web") == ["a", "b"]
    assert names(label_selector="tier==web,track!=canary") == ["a"]
    assert names(label_selector="tier in (web,db),track notin (canary)") == ["a", "c"]
    assert names(label_selector="tier") == ["a", "b", "c"]
    assert names(label_selector="!tier") == ["d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c,status.phase=Pending") == ["a", "b", "d"]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("sel", field_selector="spec.bogus=1")
    assert exc.value.status == 400


def test_limit_and_continue(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "paged"}})
    for i in range(7):
        core.create_namespaced_config_map("paged", {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map("paged", limit=3)
    assert len(first.items) == 3 and first.metadata._continue
    # Objects created after the first page are not in the snapshot the pages come from.
    core.create_namespaced_config_map("paged", {"metadata": {"name": "cm-late"}})
    seen = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map("paged", limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
    assert seen == [f"cm-{i}" for i in range(7)]


def test_merge_strategic_and_json_patch(api: ApiHarness, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", _pod("patched", app="x"))
    # The Python client picks the patch type from the body: a list → JSON patch, a dict → strategic.
    core.patch_namespaced_pod("patched", "default", {"metadata": {"labels": {"extra": "1"}}})
    core.patch_namespaced_pod("patched", "default", [{"op": "add", "path": "/metadata/annotations",
                                                      "value": {"note": "hi"}}])
    pod = core.read_namespaced_pod("patched", "default")
    assert pod.metadata.labels == {"app": "x", "extra": "1"}
    assert pod.metadata.annotations == {"note": "hi"}
    status, _, raw = api.request("PATCH", "/api/v1/namespaces/default/pods/patched",
                                 {"metadata": {"labels": {"app": None}}}, content_type="application/merge-patch+json")
    assert status == 200
    assert json.loads(raw)["metadata"]["labels"] == {"extra": "1"}
    status, _, raw = api.request("PATCH", "/api/v1/namespaces/default/pods/patched", b"{}",
                                 content_type="application/apply-patch+yaml")
    assert (status, json.loads(raw)["reason"]) == (415, "UnsupportedMediaType")


def test_strategic_merge_containers_by_name(api: ApiHarness) -> None:
    apps = client.AppsV1Api(api.client())
    dep = {"metadata": {"name": "smp"}, "spec": {
        "selector": {"matchLabels": {"app": "smp"}},
        "template": {"metadata": {"labels": {"app": "smp"}}, "spec": {"containers": [
            {"name": "a", "image": "busybox:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "busybox:1"}]}}}}
    created = apps.create_namespaced_deployment("default", dep)
    assert created.metadata.generation == 1 and created.spec.replicas == 1
    assert created.spec.strategy.type == "RollingUpdate" and created.spec.revision_history_limit == 10
    patched = apps.patch_namespaced_deployment("smp", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}]}, {"name": "b", "$patch": "delete"}]}}}})
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["a"]
    assert [(e.name, e.value) for e in containers[0].env] == [("X", "1"), ("Y", "2")]
    assert containers[0].image == "busybox:1"
    assert patched.metadata.generation == 2


def test_status_subresource_separates_spec_and_status(api: ApiHarness) -> None:
    apps = client.AppsV1Api(api.client())
    apps.create_namespaced_deployment("default", {"metadata": {"name": "st"}, "spec": {
        "selector": {"matchLabels": {"app": "st"}},
        "template": {"metadata": {"labels": {"app": "st"}}, "spec": {"containers": [
            {"name": "a", "image": "busybox:1"}]}}}})
    apps.patch_namespaced_deployment_status("st", "default", {"status": {"replicas": 5}, "spec": {"replicas": 9}})
    dep = apps.read_namespaced_deployment("st", "default")
    assert (dep.status.replicas, dep.spec.replicas) == (5, 1)
    apps.patch_namespaced_deployment("st", "default", {"status": {"replicas": 0}, "spec": {"replicas": 2}})
    dep = apps.read_namespaced_deployment("st", "default")
    assert (dep.status.replicas, dep.spec.replicas) == (5, 2)


def test_unauthenticated_is_401(api: ApiHarness) -> None:
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/pods", user="nobody")
    assert status == 401
    assert json.loads(raw) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    result = api.kubectl("get", "pods", context="nobody")
    assert result.returncode == 1
    # kubectl ≥ 1.26 fails in discovery first and words it this way against a real server too.
    assert "error: You must be logged in to the server (the server has asked for the client to provide " \
           "credentials)" in result.stderr
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/pods", user="token")
    assert status == 403  # authenticated by token, but no rules for this user
    assert json.loads(raw) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods is forbidden: User "token-user" cannot list resource "pods" in API group "" in the '
                   'namespace "default"', "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}


def test_restart_keeps_state(api: ApiHarness, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "durable"}, "data": {"k": "v"}})
    before = core.read_namespaced_config_map("durable", "default")
    api.restart()
    fresh = client.CoreV1Api(api.client())
    after = fresh.read_namespaced_config_map("durable", "default")
    assert after.data == {"k": "v"}
    assert after.metadata.uid == before.metadata.uid
    assert after.metadata.resource_version == before.metadata.resource_version


def test_pod_spec_validation_messages(api: ApiHarness) -> None:
    core = client.CoreV1Api(api.client())  # the server may have restarted on another port above
    pod = {"metadata": {"name": "broken"}, "spec": {"containers": [
        {"name": "a", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"name": "a"}]}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("default", pod)
    body = _status(exc.value)
    assert exc.value.status == 422
    assert body["message"] == (
        'Pod "broken" is invalid: [spec.containers[0].volumeMounts[0].name: Not found: "data", '
        'spec.containers[1].name: Duplicate value: "a", spec.containers[1].image: Required value]')
    assert [c["field"] for c in body["details"]["causes"]] == [
        "spec.containers[0].volumeMounts[0].name", "spec.containers[1].name", "spec.containers[1].image"]


def test_statefulset_claim_templates_count_as_volumes(api: ApiHarness) -> None:
    apps = client.AppsV1Api(api.client())
    sts = apps.create_namespaced_stateful_set("default", {"metadata": {"name": "db"}, "spec": {
        "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
            {"name": "db", "image": "busybox", "volumeMounts": [{"name": "state", "mountPath": "/var/lib/db"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "state"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    assert sts.spec.pod_management_policy == "OrderedReady" and sts.spec.replicas == 1
    assert sts.spec.volume_claim_templates[0].spec.volume_mode == "Filesystem"
