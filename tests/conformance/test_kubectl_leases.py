"""coordination.k8s.io/v1 Leases, the lock a restore takes: create, get, compare-and-swap updates (409 with the
real Status body on a stale resourceVersion), delete, and RBAC for a user who may use Leases in one namespace
only; through real kubectl and through plain HTTPS as a client library sees it."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.fixture import Cluster
from tests.conformance.kube import get_json, manifest

VERSION = "1.33"
NS = "lease-test"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("create", "namespace", NS, version=VERSION)
    cluster.kubectl("create", "namespace", f"{NS}-other", version=VERSION)
    policy = yaml.safe_load(cluster.layout.rbac_policy.read_text())
    granted = json.loads(json.dumps(policy))
    granted["users"]["dr-limited"].append(
        {"apiGroups": ["coordination.k8s.io"], "namespaces": [NS], "resources": ["leases"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]})
    cluster.write_policy(granted)
    yield NS
    cluster.write_policy(policy)
    for name in (NS, f"{NS}-other"):
        cluster.kubectl("delete", "namespace", name, "--wait=false", version=VERSION, check=False)


def lease(name: str, holder: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": NS},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60,
                     "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z",
                     "leaseTransitions": 0, **spec}}


def request(cluster: Cluster, method: str, path: str, body: Any = None, *, user: str = "admin"
            ) -> tuple[int, dict[str, Any]]:
    pki = cluster.layout.pki
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / f"{user}.crt"), str(pki / f"{user}.key"))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(cluster.server_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_create_get_update_conflict_delete(cluster: Cluster, ns: str) -> None:
    out = cluster.kubectl("create", "-f", "-", input=manifest(lease("restore-lock", "dr-1")), version=VERSION)
    assert out.stdout.strip() == "lease.coordination.k8s.io/restore-lock created"
    first = get_json(cluster, "-n", ns, "lease", "restore-lock", version=VERSION)
    assert first["spec"]["holderIdentity"] == "dr-1" and first["spec"]["leaseDurationSeconds"] == 60
    assert first["spec"]["acquireTime"] == "2026-01-01T00:00:00.000000Z"

    # A renewal with the resourceVersion that was read succeeds and moves the resourceVersion on.
    renewed = {**first, "spec": {**first["spec"], "renewTime": "2026-01-01T00:00:30.000000Z"}}
    code, body = request(cluster, "PUT", f"{LEASES}/restore-lock", renewed)
    assert code == 200 and body["spec"]["renewTime"] == "2026-01-01T00:00:30.000000Z"
    assert int(body["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    # A second writer with the stale resourceVersion loses: 409 Conflict, the real Status body.
    stolen = {**first, "spec": {**first["spec"], "holderIdentity": "dr-2"}}
    code, body = request(cluster, "PUT", f"{LEASES}/restore-lock", stolen)
    assert code == 409
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on leases.coordination.k8s.io "restore-lock": the object has '
                   "been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "restore-lock", "group": "coordination.k8s.io", "kind": "leases"},
        "code": 409}
    replaced = cluster.kubectl("replace", "-f", "-", input=json.dumps(stolen), check=False, version=VERSION)
    assert replaced.returncode == 1
    assert replaced.stderr.strip() == (
        'Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on '
        'leases.coordination.k8s.io "restore-lock": the object has been modified; please apply your changes '
        "to the latest version and try again")
    assert get_json(cluster, "-n", ns, "lease", "restore-lock", version=VERSION)["spec"]["holderIdentity"] == "dr-1"

    # Creating it again while it exists: 409 AlreadyExists.
    code, body = request(cluster, "POST", LEASES, lease("restore-lock", "dr-3"))
    assert code == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'leases.coordination.k8s.io "restore-lock" already exists'

    deleted = cluster.kubectl("-n", ns, "delete", "lease", "restore-lock", version=VERSION)
    assert deleted.stdout.strip() == 'lease.coordination.k8s.io "restore-lock" deleted'
    code, body = request(cluster, "GET", f"{LEASES}/restore-lock")
    assert code == 404 and body["message"] == 'leases.coordination.k8s.io "restore-lock" not found'
    assert body["details"] == {"name": "restore-lock", "group": "coordination.k8s.io", "kind": "leases"}


def test_namespace_scoped_user(cluster: Cluster, ns: str) -> None:
    code, body = request(cluster, "POST", LEASES, lease("limited-lock", "dr-limited"), user="limited")
    assert code == 201, body
    code, got = request(cluster, "GET", f"{LEASES}/limited-lock", user="limited")
    assert code == 200 and got["spec"]["holderIdentity"] == "dr-limited"
    got["spec"]["leaseTransitions"] = 1
    code, body = request(cluster, "PUT", f"{LEASES}/limited-lock", got, user="limited")
    assert code == 200 and body["spec"]["leaseTransitions"] == 1
    assert cluster.kubectl("-n", ns, "get", "leases", limited=True, version=VERSION).returncode == 0

    # The same user has no rule for Leases in any other namespace.
    other = cluster.kubectl("-n", f"{ns}-other", "create", "-f", "-", limited=True, check=False, version=VERSION,
                            input=manifest({**lease("x", "dr-limited"),
                                            "metadata": {"name": "x", "namespace": f"{ns}-other"}}))
    assert other.returncode == 1
    assert other.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": leases.coordination.k8s.io is forbidden: '
        'User "dr-limited" cannot create resource "leases" in API group "coordination.k8s.io" in the namespace '
        f'"{ns}-other"')
    code, body = request(cluster, "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/cp-1",
                         user="limited")
    assert code == 403 and body["details"] == {"name": "cp-1", "group": "coordination.k8s.io", "kind": "leases"}

    code, body = request(cluster, "DELETE", f"{LEASES}/limited-lock", user="limited")
    assert code == 200 and body["status"] == "Success"
