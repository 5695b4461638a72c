"""Real kubectl 1.33 against the API server: CustomResourceDefinitions served (discovery, Established, both
scopes, the status subresource), and Services' cluster IPs and node ports allocated with real conflicts."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.api.testing import ApiHarness


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: backupplans.shop.example.com
spec:
  group: shop.example.com
  scope: {scope}
  names: {{plural: backupplans, singular: backupplan, kind: BackupPlan, shortNames: [bp]}}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"""

CLUSTER_CRD = CRD.replace("backupplans", "regions").replace("backupplan", "region").replace(
    "BackupPlan", "Region").replace("[bp]", "[rg]").format(scope="Cluster")

PLAN = """
apiVersion: shop.example.com/v1
kind: BackupPlan
metadata: {name: nightly, namespace: default, labels: {app: shop}}
spec: {schedule: "0 3 * * *", keep: 7}
"""


def test_definition_is_established_and_served(api: ApiHarness) -> None:
    assert "created" in ok(api.kubectl("apply", "-f", "-", stdin=CRD.format(scope="Namespaced")))
    ok(api.kubectl("wait", "--for=condition=Established", "crd/backupplans.shop.example.com", "--timeout=10s"))
    crd = json.loads(ok(api.kubectl("get", "crd", "backupplans.shop.example.com", "-o", "json")))
    assert crd["status"]["acceptedNames"]["kind"] == "BackupPlan"
    assert crd["status"]["storedVersions"] == ["v1"]
    resources = ok(api.kubectl("api-resources", "--api-group=shop.example.com", "--no-headers")).split()
    assert resources == ["backupplans", "bp", "shop.example.com/v1", "true", "BackupPlan"]

    assert ok(api.kubectl("apply", "-f", "-", stdin=PLAN)).strip() == "backupplan.shop.example.com/nightly created"
    got = json.loads(ok(api.kubectl("get", "bp", "nightly", "-o", "json")))
    assert got["apiVersion"] == "shop.example.com/v1" and got["spec"] == {"schedule": "0 3 * * *", "keep": 7}
    assert ok(api.kubectl("get", "backupplans", "-l", "app=shop", "-o", "name")).split() == [
        "backupplan.shop.example.com/nightly"]
    # The other served version answers with its own apiVersion.
    status, _, body = api.request("GET", "/apis/shop.example.com/v1beta1/namespaces/default/backupplans/nightly")
    assert status == 200 and json.loads(body)["apiVersion"] == "shop.example.com/v1beta1"

    # The status subresource: the main resource ignores status, /status changes only status.
    ok(api.kubectl("patch", "bp", "nightly", "--type=merge", "-p", '{"status": {"lastRun": "x"}}'))
    assert "status" not in json.loads(ok(api.kubectl("get", "bp", "nightly", "-o", "json")))
    ok(api.kubectl("patch", "bp", "nightly", "--subresource=status", "--type=merge",
                   "-p", '{"status": {"lastRun": "ok"}, "spec": {"keep": 1}}'))
    got = json.loads(ok(api.kubectl("get", "bp", "nightly", "-o", "json")))
    assert got["status"] == {"lastRun": "ok"} and got["spec"]["keep"] == 7

    # The served resources survive a server restart (read back from etcd).
    api.restart()
    assert ok(api.kubectl("get", "bp", "-o", "name")).split() == ["backupplan.shop.example.com/nightly"]


def test_cluster_scoped_definition_and_deletion(api: ApiHarness) -> None:
    ok(api.kubectl("apply", "-f", "-", stdin=CLUSTER_CRD))
    region = "apiVersion: shop.example.com/v1\nkind: Region\nmetadata: {name: eu}\nspec: {zone: a}\n"
    assert ok(api.kubectl("create", "-f", "-", stdin=region)).strip() == "region.shop.example.com/eu created"
    got = json.loads(ok(api.kubectl("get", "region", "eu", "-o", "json")))
    assert "namespace" not in got["metadata"]
    # Deleting the definition deletes its objects and the resource stops being served.
    ok(api.kubectl("delete", "crd", "regions.shop.example.com"))
    status, _, _ = api.request("GET", "/apis/shop.example.com/v1/regions/eu")
    assert status == 404
    resources = ok(api.kubectl("api-resources", "--api-group=shop.example.com", "--no-headers"))
    assert "regions" not in resources
    ok(api.kubectl("apply", "-f", "-", stdin=CLUSTER_CRD))
    assert ok(api.kubectl("get", "regions", "-o", "name")).strip() == ""


def test_definition_with_a_wrong_name_is_refused(api: ApiHarness) -> None:
    bad = CRD.format(scope="Namespaced").replace("name: backupplans.shop.example.com", "name: plans.shop.example.com")
    result = api.kubectl("create", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert ('The CustomResourceDefinition "plans.shop.example.com" is invalid: metadata.name: '
            'Invalid value: "plans.shop.example.com": must be spec.names.plural+"."+spec.group') in result.stderr


def _service(name: str, node_port: int | None = None, cluster_ip: str | None = None) -> str:
    port = f", nodePort: {node_port}" if node_port else ""
    ip = f"\n  clusterIP: {cluster_ip}" if cluster_ip else ""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n"
            f"  type: NodePort{ip}\n  selector: {{app: {name}}}\n  ports: [{{port: 80{port}}}]\n")


def test_node_ports_and_cluster_ips_are_allocated_once(api: ApiHarness) -> None:
    ok(api.kubectl("create", "-f", "-", stdin=_service("web", 30080, "10.96.7.7")))
    ok(api.kubectl("create", "-f", "-", stdin=_service("api")))
    api_svc = json.loads(ok(api.kubectl("get", "svc", "api", "-o", "json")))
    allocated = api_svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= allocated <= 32767 and allocated != 30080

    taken = api.kubectl("create", "-f", "-", stdin=_service("other", 30080))
    assert taken.returncode == 1
    assert ('The Service "other" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is '
            "already allocated") in taken.stderr
    ip_taken = api.kubectl("create", "-f", "-", stdin=_service("third", None, "10.96.7.7"))
    assert ('The Service "third" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.7.7"}: failed to '
            "allocate IP 10.96.7.7: provided IP is already allocated") in ip_taken.stderr
    out_of_range = api.kubectl("create", "-f", "-", stdin=_service("fourth", 8080))
    assert "provided port is not in the valid range. The range of valid ports is 30000-32767" in out_of_range.stderr

    # An update that leaves the port out keeps it; a deleted Service frees its port.
    ok(api.kubectl("label", "svc", "web", "tier=front"))
    assert json.loads(ok(api.kubectl("get", "svc", "web", "-o", "json")))["spec"]["ports"][0]["nodePort"] == 30080
    ok(api.kubectl("delete", "svc", "web"))
    ok(api.kubectl("create", "-f", "-", stdin=_service("other", 30080)))


def test_custom_resources_pass_kubectl_validation_beside_builtin_ones(api: ApiHarness) -> None:
    """kubectl validates through /openapi/v3: a definition's versions are published there, with its schema and
    the fieldValidation parameter on the kind's PATCH operation."""
    ok(api.kubectl("apply", "-f", "-", stdin=CRD.format(scope="Namespaced")))
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}},
             {"apiVersion": "shop.example.com/v1", "kind": "BackupPlan",
              "metadata": {"name": "weekly", "namespace": "default"}, "spec": {"keep": 2}}]
    out = ok(api.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(i) for i in items)))
    assert "backupplan.shop.example.com/weekly created" in out
    root = json.loads(api.request("GET", "/openapi/v3")[2])
    assert "apis/shop.example.com/v1" in root["paths"] and "apis/shop.example.com/v1beta1" in root["paths"]


def test_resource_quota_refuses_with_the_plugins_words(api: ApiHarness) -> None:
    ok(api.kubectl("create", "namespace", "quota"))
    ok(api.kubectl("create", "-f", "-", stdin=(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: small, namespace: quota}\n"
        "spec: {hard: {configmaps: '2', count/deployments.apps: '0', requests.storage: 1Gi}}\n")))
    ok(api.kubectl("create", "configmap", "a", "-n", "quota"))
    ok(api.kubectl("create", "configmap", "b", "-n", "quota"))
    dry = api.kubectl("create", "configmap", "c", "-n", "quota", "--dry-run=server")
    assert dry.returncode == 1
    assert ('configmaps "c" is forbidden: exceeded quota: small, requested: configmaps=1, used: configmaps=2, '
            "limited: configmaps=2") in dry.stderr
    deploy = api.kubectl("create", "deployment", "web", "-n", "quota", "--image=busybox")
    assert ("exceeded quota: small, requested: count/deployments.apps=1, used: count/deployments.apps=0, "
            "limited: count/deployments.apps=0") in deploy.stderr
    claim = ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: big, namespace: quota}\n"
             "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n")
    refused = api.kubectl("create", "-f", "-", stdin=claim)
    assert ("requested: requests.storage=2Gi, used: requests.storage=0, limited: requests.storage=1Gi"
            in refused.stderr)
    ok(api.kubectl("create", "secret", "generic", "s", "-n", "quota"))  # not limited


def test_immutable_fields_are_refused_on_update(api: ApiHarness) -> None:
    claim = ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\n"
             "spec: {accessModes: [ReadWriteOnce], storageClassName: standard, "
             "resources: {requests: {storage: 1Gi}}}\n")
    ok(api.kubectl("apply", "-f", "-", stdin=claim))
    changed = api.kubectl("apply", "-f", "-", stdin=claim.replace("standard", "fast"))
    assert changed.returncode == 1
    assert ('PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable after creation except '
            "resources.requests and volumeAttributesClassName for bound claims") in changed.stderr
    ok(api.kubectl("apply", "-f", "-", stdin=claim.replace("1Gi", "2Gi")))  # expansion is allowed

    sts = ("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: default}\n"
           "spec: {serviceName: db, replicas: 0, selector: {matchLabels: {app: db}}, template: {metadata: "
           "{labels: {app: db}}, spec: {containers: [{name: db, image: busybox}]}}, volumeClaimTemplates: "
           "[{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: "
           "{storage: 1Gi}}}}]}\n")
    ok(api.kubectl("apply", "-f", "-", stdin=sts))
    ok(api.kubectl("scale", "statefulset", "db", "--replicas=0"))
    refused = api.kubectl("apply", "-f", "-", stdin=sts.replace("storage: 1Gi", "storage: 5Gi"))
    assert "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'" in refused.stderr

    job = ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: once, namespace: default}\n"
           "spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}\n")
    ok(api.kubectl("apply", "-f", "-", stdin=job))
    retemplated = api.kubectl("apply", "-f", "-", stdin=job.replace("image: busybox", "image: debian"))
    assert 'The Job "once" is invalid: spec.template: Invalid value:' in retemplated.stderr
    assert "field is immutable" in retemplated.stderr
