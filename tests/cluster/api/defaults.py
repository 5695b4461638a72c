"""Defaulting the way a real API server does it (SetDefaults_* of pkg/apis/*/v1, plus the
mutating admission plugins clients rely on: ServiceAccount, DefaultTolerationSeconds).

Only fields clients and our controllers read are defaulted; everything here is what ``kubectl get -o yaml``
shows on a real cluster for the same input.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

Json = dict[str, Any]


def _image_pull_policy(image: str) -> str:
    # pkg/apis/core/v1/defaults.go: ":latest" or no tag → Always, else IfNotPresent (digests count as tags).
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    if ":" not in name or name.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _container(c: Json) -> None:
    if c.get("image"):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if p:
            for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                               ("failureThreshold", 3)):
                p.setdefault(key, value)


def _volume(v: Json) -> None:
    for source in ("configMap", "secret"):
        if source in v:
            v[source].setdefault("defaultMode", 420)
    if "hostPath" in v:
        v["hostPath"].setdefault("type", "")
    if "downwardAPI" in v:
        v["downwardAPI"].setdefault("defaultMode", 420)
    if "projected" in v:
        v["projected"].setdefault("defaultMode", 420)


def pod_spec(spec: Json, *, in_template: bool = False) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        _container(c)
    for v in spec.get("volumes") or []:
        _volume(v)
    if not in_template:
        # ServiceAccount admission: the deprecated serviceAccount mirrors serviceAccountName.
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        # DefaultTolerationSeconds admission plugin.
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})


def _qos_class(spec: Json) -> str:
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    requests_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            requests_any = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits.get(name)) != limits.get(name):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _template(obj: Json) -> None:
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        pod_spec(template.setdefault("spec", {}), in_template=True)


def _pvc(pvc: Json) -> None:
    pvc.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    pvc.setdefault("status", {}).setdefault("phase", "Pending")


def _random_cluster_ip() -> str:
    net = ipaddress.ip_network("10.96.0.0/12")
    return str(net[random.randrange(2, net.num_addresses - 2)])


def apply_defaults(resource: str, obj: Json, *, uid: str = "") -> None:
    """Fill in defaults for a new object of ``resource`` (Store name), in place."""
    spec = obj.get("spec")
    if resource == "pods":
        pod_spec(obj.setdefault("spec", {}))
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos_class(obj["spec"]))
    elif resource == "namespaces":
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif resource == "persistentvolumeclaims":
        _pvc(obj)
    elif resource == "persistentvolumes":
        obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
        obj["spec"].setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif resource == "secrets":
        obj.setdefault("type", "Opaque")
        fold_string_data(obj)
    elif resource == "services":
        s = obj.setdefault("spec", {})
        s.setdefault("type", "ClusterIP")
        s.setdefault("sessionAffinity", "None")
        if s["type"] != "ExternalName" and not s.get("clusterIP"):
            s["clusterIP"] = _random_cluster_ip()
        if s.get("clusterIP") and s["clusterIP"] != "None":
            s.setdefault("clusterIPs", [s["clusterIP"]])
        s.setdefault("ipFamilies", ["IPv4"])
        s.setdefault("ipFamilyPolicy", "SingleStack")
        s.setdefault("internalTrafficPolicy", "Cluster")
        for port in s.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif resource == "endpoints":
        for subset in obj.get("subsets") or []:
            for port in subset.get("ports") or []:
                port.setdefault("protocol", "TCP")
    elif resource == "endpointslices.discovery.k8s.io":
        # SetDefaults_EndpointPort (discovery/v1): name "" and protocol TCP.
        for port in obj.get("ports") or []:
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")
    elif resource == "deployments.apps" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _template(obj)
    elif resource == "statefulsets.apps" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type") == "RollingUpdate":
            us.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
        for claim in spec.get("volumeClaimTemplates") or []:
            claim.setdefault("apiVersion", "v1")
            claim.setdefault("kind", "PersistentVolumeClaim")
            _pvc(claim)
        _template(obj)
    elif resource in ("replicasets.apps", "replicationcontrollers") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _template(obj)
    elif resource == "daemonsets.apps" and isinstance(spec, dict):
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type") == "RollingUpdate":
            ru = us.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        _template(obj)
    elif resource == "jobs.batch" and isinstance(spec, dict):
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        spec.setdefault("manualSelector", None)
        if not spec.get("manualSelector") and uid:
            # pkg/registry/batch/job/strategy.go generateSelector: the Job's uid selects its pods.
            name = obj["metadata"]["name"]
            generated = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                         "controller-uid": uid, "job-name": name}
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            template = spec.setdefault("template", {})
            template.setdefault("metadata", {}).setdefault("labels", {}).update(generated)
        if spec.get("manualSelector") is None:
            spec.pop("manualSelector", None)
        _template(obj)
    elif resource == "cronjobs.batch" and isinstance(spec, dict):
        # The pod template inside the jobTemplate is defaulted like any PodTemplateSpec (recursive
        # defaulting); the JobSpec itself is not (SetDefaults_Job applies to Job objects only).
        job_spec = (spec.get("jobTemplate") or {}).get("spec")
        if isinstance(job_spec, dict) and isinstance(job_spec.get("template"), dict):
            _template({"spec": job_spec})
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
    elif resource == "storageclasses.storage.k8s.io":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")


def fold_string_data(secret: Json) -> None:
    """Secret ``stringData`` is write-only: merged into ``data`` (base64), over equal keys, on every write."""
    string_data = secret.pop("stringData", None)
    if not isinstance(string_data, dict) or not string_data:
        return
    import base64

    data = secret.get("data") or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data
