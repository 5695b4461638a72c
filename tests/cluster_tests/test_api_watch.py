"""Watch semantics: from a resourceVersion, selectors, 410 Gone after compaction, kubectl wait; and the
Store's failover across etcd members."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from kubernetes import client, watch

from tests.cluster.api.config import default_api_dir
from tests.cluster.api.errors import ApiError
from tests.cluster.api.etcd_client import EtcdClient
from tests.cluster.api.resources import Registry
from tests.cluster.api.store import Store
from tests.cluster.api.testing import ApiHarness
from tests.cluster.etcd_proc import free_port, start_etcd


def test_watch_from_resource_version(api: ApiHarness) -> None:
    core = client.CoreV1Api(api.client())
    core.create_namespace({"metadata": {"name": "w"}})
    core.create_namespaced_config_map("w", {"metadata": {"name": "before", "labels": {"k": "v"}}})
    listed = core.list_namespaced_config_map("w")
    rv = listed.metadata.resource_version
    core.create_namespaced_config_map("w", {"metadata": {"name": "after", "labels": {"k": "v"}}})
    core.patch_namespaced_config_map("after", "w", {"data": {"x": "1"}})
    core.create_namespaced_config_map("w", {"metadata": {"name": "other"}})
    core.delete_namespaced_config_map("after", "w")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, "w", resource_version=rv,
                                      label_selector="k=v", timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]


def test_watch_without_version_starts_with_current_state(api: ApiHarness) -> None:
    status, _, raw = api.request("GET", "/api/v1/namespaces/kube-system/serviceaccounts?watch=1&timeoutSeconds=1")
    events = [json.loads(line) for line in raw.decode().splitlines()]
    assert status == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "default")]


def test_field_selector_watch_sees_objects_leave_and_enter(api: ApiHarness) -> None:
    core = client.CoreV1Api(api.client())
    core.create_namespace({"metadata": {"name": "fw"}})
    rv = core.list_namespaced_pod("fw").metadata.resource_version
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    core.create_namespaced_pod("fw", pod)
    api.run(api.store.mutate("pods", "fw", "p", lambda o: {**o, "status": {**o["status"], "phase": "Running"}},
                             subresource="status"))
    events = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "fw", resource_version=rv,
                                      field_selector="status.phase=Pending", timeout_seconds=2):
        events.append((event["type"], event["object"].status.phase))
    # Leaving the selection is a DELETED event carrying the new state, as in a real watch cache.
    assert events == [("ADDED", "Pending"), ("DELETED", "Running")]


def test_compacted_resource_version_is_410(api: ApiHarness) -> None:
    core = client.CoreV1Api(api.client())
    old = core.create_namespaced_config_map("default", {"metadata": {"name": "old"}}).metadata.resource_version
    for i in range(3):
        core.patch_namespaced_config_map("old", "default", {"data": {"i": str(i)}})
    newest = int(core.read_namespaced_config_map("old", "default").metadata.resource_version)
    assert api.store is not None
    api.run(api.store.etcd.compact(newest))
    status, _, raw = api.request("GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old}")
    event = json.loads(raw.decode().splitlines()[0])
    assert status == 200
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {old} (")


def test_kubectl_wait_for_condition(api: ApiHarness) -> None:
    core = client.CoreV1Api(api.client())
    core.create_namespaced_pod("default", {"metadata": {"name": "waited"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}]}})

    def ready(obj: dict[str, Any]) -> dict[str, Any]:
        obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        return obj

    store = api.store
    assert store is not None
    # Flip the condition only after kubectl has started waiting, so the watch has to deliver it.
    threading.Timer(1.0, lambda: api.run(store.mutate("pods", "default", "waited", ready,
                                                      subresource="status"))).start()
    result = api.kubectl("wait", "--for=condition=Ready", "pod/waited", "--timeout=20s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pod/waited condition met"


def test_kubectl_get_watch_prints_table_rows(api: ApiHarness) -> None:
    result = api.kubectl("get", "namespaces", "--watch", "--request-timeout=2s")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    assert any(line.split()[:2] == ["kube-system", "Active"] for line in lines)


def test_store_fails_over_between_members() -> None:
    """Two endpoints, one of them down: every operation still succeeds through the live member."""
    member = start_etcd()
    dead = f"http://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        etcd = EtcdClient([dead, member.client_url], request_timeout=3)
        store = Store(etcd, Registry(default_api_dir() / "discovery"))
        try:
            await store.create("namespaces", {"metadata": {"name": "default"}})
            created = await store.create("configmaps", {"metadata": {"name": "x", "namespace": "default"}})
            events = store.watch("configmaps", "default", resource_version=int(created["metadata"]["resourceVersion"]))
            task = asyncio.ensure_future(events.__anext__())
            await store.mutate("configmaps", "default", "x", lambda o: {**o, "data": {"a": "b"}})
            kind, obj = await asyncio.wait_for(task, 10)
            assert (kind, obj["data"]) == ("MODIFIED", {"a": "b"})
            await events.aclose()  # type: ignore[attr-defined]
            with pytest.raises(ApiError) as exc:
                await store.get("configmaps", "default", "missing")
            assert exc.value.code == 404
        finally:
            await store.close()

    try:
        asyncio.run(scenario())
    finally:
        member.stop()
