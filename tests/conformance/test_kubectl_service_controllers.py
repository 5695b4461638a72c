"""Real kubectl against the controllers and admission a namespace restore meets: ServiceAccount admission and
the default ServiceAccount, the EndpointSlice and Endpoints controllers, adoption of orphans by label selector."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.fixture import KUBECTL_VERSIONS, Cluster
from tests.conformance.kube import BUSYBOX, get_json, manifest, pod
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = "svc-ctl"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def create(cluster: Cluster, *docs: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=manifest(*docs))


def items(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    return list(get_json(cluster, *args, version=KUBECTL_VERSIONS[-1])["items"])


def web(name: str, ns: str, labels: dict[str, str], *, ports: bool = True, **spec: Any) -> dict[str, Any]:
    p = pod(name, ns, command=["sh", "-c", "exec sleep 3600"], **spec)
    p["metadata"]["labels"] = labels
    if ports:
        p["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    return p


def replicaset(name: str, ns: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                    {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"],
                     "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


def controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def slices(cluster: Cluster, ns: str, service: str) -> list[dict[str, Any]]:
    return items(cluster, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={service}")


# ------------------------------------------------------------------------------------ ServiceAccount admission
def test_new_namespace_has_default_service_account_used_by_pods(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "sa-fresh")
    try:
        # No wait in between: a pod right after its namespace is admitted, as on a real cluster.
        create(cluster, pod("first", "sa-fresh"))
        created = get_json(cluster, "pod", "first", "-n", "sa-fresh", version=KUBECTL_VERSIONS[-1])
        assert (created["spec"]["serviceAccountName"], created["spec"]["serviceAccount"]) == ("default", "default")
        names = [a["metadata"]["name"] for a in items(cluster, "serviceaccounts", "-n", "sa-fresh")]
        assert names == ["default"]
    finally:
        cluster.kubectl("delete", "namespace", "sa-fresh", "--wait=false")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_pod_naming_a_missing_service_account_is_refused(cluster: Cluster, ns: str, version: str) -> None:
    name = f"ghostly-{version.replace('.', '')}"
    doc = pod(name, ns, serviceAccountName="ghost")
    refused = cluster.kubectl("create", "-f", "-", input=manifest(doc), version=version, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f'Error from server (Forbidden): error when creating "STDIN": pods "{name}" is forbidden: '
        f'error looking up service account {ns}/ghost: serviceaccount "ghost" not found')
    assert items(cluster, "pods", "-n", ns, "--field-selector", f"metadata.name={name}") == []
    # A dry run is refused the same way, and nothing exists after either.
    dry = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=manifest(doc), version=version,
                          check=False)
    assert dry.returncode == 1 and 'serviceaccount "ghost" not found' in dry.stderr


def test_pod_is_admitted_once_its_service_account_exists(cluster: Cluster, ns: str) -> None:
    create(cluster, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": ns}})
    create(cluster, pod("runs-as-runner", ns, serviceAccountName="runner"))
    spec = get_json(cluster, "pod", "runs-as-runner", "-n", ns, version=KUBECTL_VERSIONS[-1])["spec"]
    assert spec["serviceAccountName"] == "runner"


def test_deleted_default_service_account_is_made_again(cluster: Cluster, ns: str) -> None:
    old = get_json(cluster, "serviceaccount", "default", "-n", ns, version=KUBECTL_VERSIONS[-1])
    cluster.kubectl("delete", "serviceaccount", "default", "-n", ns)

    def remade() -> bool:
        now = items(cluster, "serviceaccounts", "-n", ns, "--field-selector", "metadata.name=default")
        return bool(now) and now[0]["metadata"]["uid"] != old["metadata"]["uid"]

    eventually(remade, timeout=30, what="the default ServiceAccount made again")


def test_replicaset_reports_pods_refused_for_a_missing_service_account(cluster: Cluster, ns: str) -> None:
    rs = replicaset("needs-sa", ns, {"app": "needs-sa"}, 1)
    rs["spec"]["template"]["spec"]["serviceAccountName"] = "later"
    create(cluster, rs)
    expected = (f'pods "needs-sa-" is forbidden: error looking up service account {ns}/later: '
                f'serviceaccount "later" not found')

    def failure() -> dict[str, Any] | None:
        status = get_json(cluster, "rs", "needs-sa", "-n", ns, version=KUBECTL_VERSIONS[-1]).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "ReplicaFailure"), None)

    cond = eventually(failure, timeout=30, what="the ReplicaFailure condition")
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "FailedCreate", expected)
    events = [e for e in items(cluster, "events", "-n", ns) if e["involvedObject"]["name"] == "needs-sa"]
    assert any(e["type"] == "Warning" and e["reason"] == "FailedCreate"
               and e["message"] == f"Error creating: {expected}" for e in events), events
    # Once the account exists the ReplicaSet creates its pod and the condition goes.
    create(cluster, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "later", "namespace": ns}})
    eventually(lambda: len(items(cluster, "pods", "-n", ns, "-l", "app=needs-sa")) == 1 and failure() is None,
               timeout=30, what="the pod created and ReplicaFailure cleared")


# ------------------------------------------------------------------------------------ EndpointSlices, Endpoints
def test_endpointslices_follow_the_pods_of_a_service(cluster: Cluster, ns: str) -> None:
    labels = {"app": "shop"}
    create(cluster, {"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "shop", "namespace": ns, "labels": {"team": "a"}},
                     "spec": {"selector": labels, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}},
           # The ReplicaSet selects a subset of the Service's pods: the portless pod below is not adopted.
           replicaset("shop", ns, {**labels, "tier": "rs"}, 2))
    cluster.kubectl("-n", ns, "rollout", "status", "rs/shop", "--timeout=60s", check=False)
    svc = get_json(cluster, "service", "shop", "-n", ns, version=KUBECTL_VERSIONS[-1])

    def ready_endpoints(n: int) -> list[dict[str, Any]] | None:
        found = slices(cluster, ns, "shop")
        eps = [e for s in found for e in s.get("endpoints") or [] if e["conditions"]["ready"]]
        return found if len(found) == 1 and len(eps) == n else None

    [sl] = eventually(lambda: ready_endpoints(2), timeout=60, what="one slice with 2 ready endpoints")
    pods = {p["metadata"]["name"]: p for p in items(cluster, "pods", "-n", ns, "-l", "app=shop")}
    assert sl["metadata"]["generateName"] == "shop-" and sl["metadata"]["name"].startswith("shop-")
    assert sl["metadata"]["labels"] == {"team": "a", "kubernetes.io/service-name": "shop",
                                        MANAGED_BY: "endpointslice-controller.k8s.io"}
    assert sl["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "shop",
                                                  "uid": svc["metadata"]["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]  # the named target port resolved
    for ep in sl["endpoints"]:
        p = pods[ep["targetRef"]["name"]]
        assert ep == {"addresses": [p["status"]["podIP"]],
                      "conditions": {"ready": True, "serving": True, "terminating": False},
                      "nodeName": p["spec"]["nodeName"],
                      "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                    "uid": p["metadata"]["uid"]}}
    endpoints = get_json(cluster, "endpoints", "shop", "-n", ns, version=KUBECTL_VERSIONS[-1])
    assert endpoints["metadata"]["labels"] == {"team": "a"}
    assert endpoints["subsets"] == [{
        "addresses": sorted(({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                              "targetRef": {"kind": "Pod", "namespace": ns, "name": n, "uid": p["metadata"]["uid"]}}
                             for n, p in pods.items()), key=lambda a: (a["ip"], a["targetRef"]["uid"])),
        "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]}]

    # Scaled up: the new pod joins the same slice; a pod that lacks the named port gets a slice of its own.
    cluster.kubectl("-n", ns, "scale", "rs/shop", "--replicas=3")
    eventually(lambda: ready_endpoints(3), timeout=60, what="3 ready endpoints")
    create(cluster, web("portless", ns, labels, ports=False))

    def two_slices() -> list[dict[str, Any]] | None:
        found = slices(cluster, ns, "shop")
        return found if len(found) == 2 and all(s.get("endpoints") for s in found) else None

    found = eventually(two_slices, timeout=60, what="a second slice for the pod without the port")
    odd = next(s for s in found if not s.get("ports"))
    assert [e["targetRef"]["name"] for e in odd["endpoints"]] == ["portless"]

    # Everything gone: one placeholder slice, an Endpoints object without subsets.
    cluster.kubectl("-n", ns, "delete", "pod", "portless", "--grace-period=0", "--force")
    cluster.kubectl("-n", ns, "scale", "rs/shop", "--replicas=0")

    def placeholder() -> dict[str, Any] | None:
        found = slices(cluster, ns, "shop")
        return found[0] if len(found) == 1 and found[0].get("endpoints") is None else None

    empty = eventually(placeholder, timeout=60, what="the placeholder slice")
    assert empty.get("ports") is None
    eventually(lambda: "subsets" not in get_json(cluster, "endpoints", "shop", "-n", ns,
                                                 version=KUBECTL_VERSIONS[-1]), timeout=30, what="no subsets")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_get_endpoints_and_endpointslices_tables(cluster: Cluster, ns: str, version: str) -> None:
    name = f"tbl-{version.replace('.', '')}"
    labels = {"app": name}
    create(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                     "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
           web(name, ns, labels))
    ip = eventually(lambda: (get_json(cluster, "pod", name, "-n", ns, version=version).get("status") or {})
                    .get("podIP"), timeout=60, what="the pod's IP")
    # Ready, not just listed: until the pod is Ready, Endpoints holds it under notReadyAddresses, which
    # kubectl's table leaves out (the run that failed printed an empty column there).
    eventually(lambda: any((e.get("conditions") or {}).get("ready") for s in slices(cluster, ns, name)
                           for e in s.get("endpoints") or []), timeout=60, what="a ready endpoint in the slice")

    def ready_address() -> bool:
        got = cluster.kubectl("get", "endpoints", name, "-n", ns, "-o", "json", version=version, check=False)
        subsets = json.loads(got.stdout).get("subsets") or [] if got.returncode == 0 else []
        return any(ss.get("addresses") for ss in subsets)

    eventually(ready_address, timeout=30, what="a ready address in the Endpoints object")
    [sl] = slices(cluster, ns, name)
    out = cluster.kubectl("get", "endpointslices", "-n", ns, sl["metadata"]["name"], "--no-headers",
                          version=version).stdout.split()
    assert out[:4] == [sl["metadata"]["name"], "IPv4", "8080", ip]
    out = cluster.kubectl("get", "endpoints", "-n", ns, name, "--no-headers", version=version).stdout.split()
    assert out[:2] == [name, f"{ip}:8080"]


def test_terminating_pod_stays_in_the_slice_not_ready_and_leaves_endpoints(cluster: Cluster, ns: str) -> None:
    labels = {"app": "slow"}
    slow = web("slow", ns, labels, ports=False, terminationGracePeriodSeconds=60)
    # Ignores SIGTERM: the pod stays Terminating until the test force-deletes it.
    slow["spec"]["containers"][0]["command"] = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    create(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "slow", "namespace": ns},
                     "spec": {"selector": labels, "ports": [{"port": 80}]}}, slow)
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/slow", "--timeout=60s")
    eventually(lambda: any(s.get("endpoints") for s in slices(cluster, ns, "slow")), timeout=30, what="endpoint")
    cluster.kubectl("-n", ns, "delete", "pod", "slow", "--wait=false")

    def terminating() -> dict[str, Any] | None:
        eps = [e for s in slices(cluster, ns, "slow") for e in s.get("endpoints") or []]
        return eps[0] if eps and eps[0]["conditions"]["terminating"] else None

    ep = eventually(terminating, timeout=30, what="the endpoint marked terminating")
    assert ep["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert "subsets" not in get_json(cluster, "endpoints", "slow", "-n", ns, version=KUBECTL_VERSIONS[-1])
    cluster.kubectl("-n", ns, "delete", "pod", "slow", "--grace-period=0", "--force")


def test_service_deleted_takes_its_slices_and_endpoints(cluster: Cluster, ns: str) -> None:
    create(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "brief", "namespace": ns},
                     "spec": {"selector": {"app": "brief"}, "ports": [{"port": 80}]}})
    eventually(lambda: slices(cluster, ns, "brief"), timeout=30, what="the placeholder slice")
    eventually(lambda: cluster.kubectl("get", "endpoints", "brief", "-n", ns, check=False).returncode == 0,
               timeout=30, what="the Endpoints")
    cluster.kubectl("delete", "service", "brief", "-n", ns)
    eventually(lambda: not slices(cluster, ns, "brief"), timeout=30, what="slices garbage-collected")
    eventually(lambda: cluster.kubectl("get", "endpoints", "brief", "-n", ns, check=False).returncode == 1,
               timeout=30, what="the Endpoints deleted")


def test_service_without_selector_gets_no_managed_slices(cluster: Cluster, ns: str) -> None:
    create(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external", "namespace": ns},
                     "spec": {"ports": [{"port": 5432}]}})
    create(cluster, {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external", "namespace": ns},
                     "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]})
    time.sleep(2)  # several controller passes
    # (A real cluster's mirroring controller would copy the Endpoints into a slice of its own; not modelled.)
    assert items(cluster, "endpointslices", "-n", ns, "-l",
                 f"kubernetes.io/service-name=external,{MANAGED_BY}=endpointslice-controller.k8s.io") == []
    endpoints = get_json(cluster, "endpoints", "external", "-n", ns, version=KUBECTL_VERSIONS[-1])
    assert endpoints["subsets"] == [{"addresses": [{"ip": "192.0.2.10"}],
                                    "ports": [{"port": 5432, "protocol": "TCP"}]}]


# ------------------------------------------------------------------------------------------------ adoption
def test_replicaset_adopts_orphan_pods_and_releases_relabelled_ones(cluster: Cluster, ns: str) -> None:
    labels = {"app": "adopt"}
    create(cluster, web("orphan-a", ns, labels), web("orphan-b", ns, labels))
    create(cluster, replicaset("adopter", ns, labels, 2))
    rs = get_json(cluster, "rs", "adopter", "-n", ns, version=KUBECTL_VERSIONS[-1])

    def adopted() -> bool:
        pods = items(cluster, "pods", "-n", ns, "-l", "app=adopt")
        return sorted(p["metadata"]["name"] for p in pods) == ["orphan-a", "orphan-b"] and all(
            controller(p) == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "adopter",
                              "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
            for p in pods)

    eventually(adopted, timeout=30, what="both orphans adopted, no pod created")
    eventually(lambda: (get_json(cluster, "rs", "adopter", "-n", ns, version=KUBECTL_VERSIONS[-1])
                        .get("status") or {}).get("replicas") == 2, timeout=30, what="status.replicas 2")
    # Relabelled out of the selector: released (its reference removed), and the ReplicaSet makes a new pod.
    cluster.kubectl("-n", ns, "label", "pod", "orphan-a", "app=gone", "--overwrite")
    eventually(lambda: not get_json(cluster, "pod", "orphan-a", "-n", ns, version=KUBECTL_VERSIONS[-1])
               ["metadata"].get("ownerReferences"), timeout=30, what="orphan-a released")
    eventually(lambda: len(items(cluster, "pods", "-n", ns, "-l", "app=adopt")) == 2, timeout=30,
               what="a replacement pod")
    # A pod another controller owns is never taken.
    other = items(cluster, "pods", "-n", ns, "-l", "app=shop")
    assert all(controller(p) is None or controller(p)["name"] != "adopter" for p in other)


def test_deployment_adopts_an_orphan_replicaset(cluster: Cluster, ns: str) -> None:
    labels = {"app": "legacy"}
    template = {"metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [
        {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}
    create(cluster, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                     "metadata": {"name": "legacy-old", "namespace": ns, "labels": labels},
                     "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}})
    eventually(lambda: len(items(cluster, "pods", "-n", ns, "-l", "app=legacy")) == 1, timeout=30, what="pod")
    create(cluster, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "legacy", "namespace": ns},
                     "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}})
    deploy = get_json(cluster, "deployment", "legacy", "-n", ns, version=KUBECTL_VERSIONS[-1])
    eventually(lambda: (controller(get_json(cluster, "rs", "legacy-old", "-n", ns, version=KUBECTL_VERSIONS[-1]))
                        or {}).get("uid") == deploy["metadata"]["uid"], timeout=30, what="legacy-old adopted")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/legacy", "--timeout=60s")
    # Its template was the Deployment's: adopted as the current ReplicaSet, no other one made.
    sets = items(cluster, "rs", "-n", ns, "-l", "app=legacy")
    assert [s["metadata"]["name"] for s in sets] == ["legacy-old"]


def test_statefulset_adopts_its_orphan_pod(cluster: Cluster, ns: str) -> None:
    labels = {"app": "kv"}
    create(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kv", "namespace": ns},
                     "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 80}]}})
    orphan = web("kv-0", ns, labels)
    create(cluster, orphan)
    uid = get_json(cluster, "pod", "kv-0", "-n", ns, version=KUBECTL_VERSIONS[-1])["metadata"]["uid"]
    create(cluster, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv", "namespace": ns},
                     "spec": {"replicas": 1, "serviceName": "kv", "selector": {"matchLabels": labels},
                              "updateStrategy": {"type": "OnDelete"},
                              "template": {"metadata": {"labels": labels}, "spec": orphan["spec"]}}})
    sts = get_json(cluster, "sts", "kv", "-n", ns, version=KUBECTL_VERSIONS[-1])

    def adopted() -> dict[str, Any] | None:
        p = get_json(cluster, "pod", "kv-0", "-n", ns, version=KUBECTL_VERSIONS[-1])
        return p if (controller(p) or {}).get("uid") == sts["metadata"]["uid"] else None

    p = eventually(adopted, timeout=30, what="kv-0 adopted")
    assert p["metadata"]["uid"] == uid
    # Headless: the slice carries the headless label.
    eventually(lambda: [s["metadata"]["labels"].get("service.kubernetes.io/headless") for s in
                        slices(cluster, ns, "kv")] == [""], timeout=30, what="the headless slice")
    assert json.loads(cluster.kubectl("get", "sts", "kv", "-n", ns, "-o", "json").stdout)["status"]["replicas"] == 1


def test_daemonset_adopts_the_orphan_pod_on_its_node(cluster: Cluster, ns: str) -> None:
    labels = {"app": "node-agent"}
    orphan = web("agent-orphan", ns, labels, ports=False, nodeName="worker-1")
    create(cluster, orphan)
    create(cluster, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
                     "spec": {"selector": {"matchLabels": labels}, "updateStrategy": {"type": "OnDelete"},
                              "template": {"metadata": {"labels": labels},
                                           "spec": {k: v for k, v in orphan["spec"].items() if k != "nodeName"}}}})
    ds = get_json(cluster, "ds", "agent", "-n", ns, version=KUBECTL_VERSIONS[-1])

    def adopted() -> bool:
        pods = items(cluster, "pods", "-n", ns, "-l", "app=node-agent")
        return [p["metadata"]["name"] for p in pods] == ["agent-orphan"] and \
            (controller(pods[0]) or {}).get("uid") == ds["metadata"]["uid"]

    eventually(adopted, timeout=30, what="the orphan adopted as worker-1's daemon pod")
    time.sleep(2)  # and no second pod made for worker-1
    assert [p["metadata"]["name"] for p in items(cluster, "pods", "-n", ns, "-l", "app=node-agent")] == [
        "agent-orphan"]
