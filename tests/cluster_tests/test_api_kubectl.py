"""Real kubectl 1.33 against the API server: discovery, Table printing, create -f with strict field
validation, scale, RBAC, Pod Security and auth subcommands."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.api.testing import ApiHarness


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        command: [sleep, 1d]
"""


def test_version_and_api_resources(api: ApiHarness) -> None:
    out = json.loads(ok(api.kubectl("version", "-o", "json")))
    assert out["serverVersion"]["gitVersion"] == "v1.36.0"
    resources = ok(api.kubectl("api-resources", "--no-headers"))
    assert any(line.split()[0] == "deployments" and "apps/v1" in line for line in resources.splitlines())
    assert any(line.split()[0] == "persistentvolumeclaims" and "pvc" in line for line in resources.splitlines())


def test_create_from_file_and_table_output(api: ApiHarness) -> None:
    assert ok(api.kubectl("create", "-f", "-", stdin=DEPLOYMENT)).strip() == "deployment.apps/web created"
    table = ok(api.kubectl("get", "deployments")).splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "0/2", "0", "0"]
    wide = ok(api.kubectl("get", "deploy", "web", "-o", "wide")).splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["main", "busybox:1.36", "app=web"]
    ns = ok(api.kubectl("get", "namespaces")).splitlines()
    assert ns[0].split() == ["NAME", "STATUS", "AGE"]
    assert any(line.split()[:2] == ["kube-system", "Active"] for line in ns[1:])


def test_pod_table_columns(api: ApiHarness) -> None:
    ok(api.kubectl("run", "lonely", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "1d"))
    lines = ok(api.kubectl("get", "pods", "lonely")).splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["lonely", "0/1", "Pending", "0"]
    pod = json.loads(ok(api.kubectl("get", "pod", "lonely", "-o", "json")))
    assert pod["spec"]["restartPolicy"] == "Never"


def test_strict_field_validation(api: ApiHarness) -> None:
    bad = DEPLOYMENT.replace("name: web\n", "name: web-bad\n", 1).replace("  replicas: 2\n",
                                                                           "  replicas: 2\n  foo: bar\n")
    result = api.kubectl("create", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert 'Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be ' \
           'handled as a Deployment: strict decoding error: unknown field "spec.foo"' in result.stderr
    wrong_type = DEPLOYMENT.replace("name: web\n", "name: web-type\n", 1).replace("replicas: 2", 'replicas: "2"')
    result = api.kubectl("create", "-f", "-", stdin=wrong_type)
    assert result.returncode == 1
    assert "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32" \
        in result.stderr
    # --validate=warn sends fieldValidation=Warn: created, with the server's warning printed.
    result = api.kubectl("create", "--validate=warn", "-f", "-", stdin=bad)
    assert result.returncode == 0, result.stderr
    assert 'Warning: unknown field "spec.foo"' in result.stderr


def test_scale_changes_spec_replicas(api: ApiHarness) -> None:
    ok(api.kubectl("create", "-f", "-", stdin=DEPLOYMENT.replace("name: web\n", "name: scaled\n", 1)))
    assert ok(api.kubectl("scale", "deployment/scaled", "--replicas=5")).strip() == "deployment.apps/scaled scaled"
    spec = json.loads(ok(api.kubectl("get", "deploy", "scaled", "-o", "json")))["spec"]
    assert spec["replicas"] == 5
    result = api.kubectl("scale", "deployment/scaled", "--current-replicas=3", "--replicas=1")
    assert result.returncode == 1
    assert "Expected replicas to be 3, was 5" in result.stderr
    ok(api.kubectl("scale", "deployment/scaled", "--current-replicas=5", "--replicas=0"))
    status, _, raw = api.request("GET", "/apis/apps/v1/namespaces/default/deployments/scaled/scale")
    scale = json.loads(raw)
    assert (status, scale["kind"], scale["apiVersion"]) == (200, "Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 0}
    assert scale["status"]["selector"] == "app=scaled" or scale["status"]["selector"] == "app=web"


def test_not_found_and_forbidden_through_kubectl(api: ApiHarness) -> None:
    result = api.kubectl("get", "pod", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'
    result = api.kubectl("create", "configmap", "x", context="limited")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'error: failed to create configmap: configmaps is forbidden: User "dr-limited" cannot create resource '
        '"configmaps" in API group "" in the namespace "default"')
    assert ok(api.kubectl("get", "pods", context="limited")).startswith("NAME")
    result = api.kubectl("get", "pods", "-n", "kube-system", context="limited")
    assert 'User "dr-limited" cannot list resource "pods" in API group "" in the namespace "kube-system"' \
        in result.stderr


def test_auth_can_i_and_whoami(api: ApiHarness) -> None:
    assert ok(api.kubectl("auth", "can-i", "create", "pods")).strip() == "yes"
    result = api.kubectl("auth", "can-i", "create", "pods/exec", context="limited")
    assert (result.returncode, result.stdout.strip()) == (1, "no")
    assert ok(api.kubectl("auth", "can-i", "get", "pods/log", context="limited")).strip() == "yes"
    who = json.loads(ok(api.kubectl("auth", "whoami", "-o", "json")))
    assert who["status"]["userInfo"]["username"] == "kubernetes-admin"
    assert "kubeadm:cluster-admins" in who["status"]["userInfo"]["groups"]


def test_pod_security_rejection(api: ApiHarness) -> None:
    ok(api.kubectl("create", "namespace", "locked"))
    ok(api.kubectl("label", "namespace", "locked", "pod-security.kubernetes.io/enforce=restricted"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hosty"}, "spec": {
        "hostNetwork": True, "containers": [{"name": "c", "image": "busybox:1.36"}]}}
    result = api.kubectl("create", "-n", "locked", "-f", "-", stdin=json.dumps(pod))
    assert result.returncode == 1
    assert (
        'Error from server (Forbidden): error when creating "STDIN": pods "hosty" is forbidden: violates '
        'PodSecurity "restricted:latest": host namespaces (hostNetwork=true), allowPrivilegeEscalation != false '
        '(container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted '
        'capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true '
        '(pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" '
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")') in result.stderr
    # Workloads are admitted with a warning: their pods are what the namespace rejects.
    result = api.kubectl("create", "-n", "locked", "-f", "-", stdin=DEPLOYMENT)
    assert result.returncode == 0, result.stderr
    assert 'Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false' \
        in result.stderr
    compliant = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
    ok(api.kubectl("create", "-n", "locked", "-f", "-", stdin=json.dumps(compliant)))


def test_delete_and_dry_run(api: ApiHarness) -> None:
    ok(api.kubectl("create", "configmap", "gone"))
    assert ok(api.kubectl("create", "configmap", "dry", "--dry-run=server")).strip() == \
        "configmap/dry created (server dry run)"
    assert api.kubectl("get", "configmap", "dry").returncode == 1
    assert ok(api.kubectl("delete", "configmap", "gone")).strip() == 'configmap "gone" deleted'
    assert api.kubectl("get", "configmap", "gone").returncode == 1


def test_typed_commands_send_protobuf_that_decodes(api: ApiHarness) -> None:
    """kubectl's typed `create` subcommands send application/vnd.kubernetes.protobuf bodies."""
    ok(api.kubectl("create", "deployment", "proto", "--image=busybox:1.36", "--replicas=3", "--port=8080"))
    dep = json.loads(ok(api.kubectl("get", "deployment", "proto", "-o", "json")))
    assert dep["metadata"]["labels"] == {"app": "proto"}
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "proto"}}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"]) == ("busybox", "busybox:1.36")
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    ok(api.kubectl("create", "deployment", "zero", "--image=busybox:1.36", "--replicas=0"))
    zero = json.loads(ok(api.kubectl("get", "deployment", "zero", "-o", "json")))
    assert zero["spec"]["replicas"] == 0  # an explicit 0 in a pointer field is kept, not defaulted to 1
    ok(api.kubectl("create", "secret", "generic", "s", "--from-literal=password=hunter2"))
    secret = json.loads(ok(api.kubectl("get", "secret", "s", "-o", "json")))
    assert (secret["type"], secret["data"]) == ("Opaque", {"password": "aHVudGVyMg=="})
    ok(api.kubectl("create", "configmap", "c", "--from-literal=a=1", "--from-literal=b=2"))
    assert json.loads(ok(api.kubectl("get", "cm", "c", "-o", "json")))["data"] == {"a": "1", "b": "2"}
    ok(api.kubectl("create", "serviceaccount", "robot"))
    assert ok(api.kubectl("get", "sa", "robot", "-o", "name")).strip() == "serviceaccount/robot"


def test_typed_job_cronjob_service_send_protobuf_that_decodes(api: ApiHarness) -> None:
    """kubectl 1.33's `create job|cronjob|service` use the typed clients: protobuf bodies."""
    ok(api.kubectl("create", "job", "pj", "--image=busybox:1.36", "--", "sh", "-c", "echo hi"))
    job = json.loads(ok(api.kubectl("get", "job", "pj", "-o", "json")))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"], container["command"]) == ("pj", "busybox:1.36",
                                                                            ["sh", "-c", "echo hi"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    ok(api.kubectl("create", "cronjob", "pcj", "--image=busybox:1.36", "--schedule=*/5 * * * *", "--", "echo", "x"))
    cron = json.loads(ok(api.kubectl("get", "cronjob", "pcj", "-o", "json")))
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["jobTemplate"]["metadata"]["name"] == "pcj"
    template = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["restartPolicy"] == "OnFailure" and template["containers"][0]["command"] == ["echo", "x"]
    ok(api.kubectl("create", "job", "from-pcj", "--from=cronjob/pcj"))
    manual = json.loads(ok(api.kubectl("get", "job", "from-pcj", "-o", "json")))
    assert manual["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert manual["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    ok(api.kubectl("create", "service", "clusterip", "psvc", "--tcp=80:8080"))
    svc = json.loads(ok(api.kubectl("get", "service", "psvc", "-o", "json")))
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert (svc["spec"]["selector"], svc["spec"]["type"]) == ({"app": "psvc"}, "ClusterIP")
