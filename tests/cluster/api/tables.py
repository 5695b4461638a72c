"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` responses with the real printer columns
(pkg/printers/internalversion/printers.go) for the resources kubectl-dr users look at."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.cluster.api.scale import selector_string

if TYPE_CHECKING:
    from tests.cluster.api.rest import Context

Json = dict[str, Any]
Row = list[Any]

_NAME = ("Name", "string", "name", "Name must be unique within a namespace.", 0)
_AGE = ("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object "
        "was created.", 0)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").replace(" ", "")
    return any("as=Table" in media and "g=meta.k8s.io" in media for media in accept.split(","))


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    if years < 8:
        days = (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def age(text: str | None) -> str:
    t = _parse_time(text)
    if t is None:
        return "<unknown>"
    return human_duration((dt.datetime.now(dt.timezone.utc) - t).total_seconds())


def _created(obj: Json) -> str:
    return age(obj["metadata"].get("creationTimestamp"))


def _containers(spec: Json) -> tuple[str, str]:
    containers = spec.get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _template_spec(obj: Json) -> Json:
    return (((obj.get("spec") or {}).get("template") or {}).get("spec")) or {}


def _pod_row(pod: Json) -> Row:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    total = len(spec.get("containers") or [])
    ready = restarts = 0
    reason = status.get("reason") or status.get("phase") or ""
    init_failed = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += int(cs.get("restartCount", 0))
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        init_failed = True
        if term:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                      else f"ExitCode:{term.get('exitCode')}"))
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        break
    if not init_failed:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount", 0))
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                else f"ExitCode:{term.get('exitCode')}")
            elif state.get("running") and cs.get("ready"):
                has_running = True
                ready += 1
            elif state.get("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running" if any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in status.get("conditions") or []) else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return [pod["metadata"]["name"], f"{ready}/{total}", reason, str(restarts), _created(pod),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            "<none>" if not spec.get("readinessGates") else str(len(spec["readinessGates"]))]


def _node_row(node: Json) -> Row:
    status = node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    text = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    labels = node["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k)
    if labels.get("kubernetes.io/role"):
        roles.append(labels["kubernetes.io/role"])
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [node["metadata"]["name"], text, ",".join(roles) or "<none>", _created(node),
            info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}


def _modes(modes: list[str] | None) -> str:
    return ",".join(_MODES.get(m, m) for m in modes or [])


def _pvc_row(pvc: Json) -> Row:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    phase = "Terminating" if pvc["metadata"].get("deletionTimestamp") else status.get("phase", "")
    bound = bool(spec.get("volumeName"))
    capacity = ((status.get("capacity") or {}).get("storage", "")) if bound else ""
    storage_class = spec.get("storageClassName") or (pvc["metadata"].get("annotations") or {}).get(
        "volume.beta.kubernetes.io/storage-class", "")
    return [pvc["metadata"]["name"], phase, spec.get("volumeName", ""), capacity,
            _modes(status.get("accessModes")) if bound else "", storage_class,
            spec.get("volumeAttributesClassName") or "<unset>", _created(pvc), spec.get("volumeMode", "")]


def _pv_row(pv: Json) -> Row:
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    phase = "Terminating" if pv["metadata"].get("deletionTimestamp") else status.get("phase", "")
    return [pv["metadata"]["name"], (spec.get("capacity") or {}).get("storage", ""),
            _modes(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy", ""), phase, claim,
            spec.get("storageClassName", ""), spec.get("volumeAttributesClassName") or "<unset>",
            status.get("reason", ""), _created(pv), spec.get("volumeMode", "")]


def _deployment_row(obj: Json) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_template_spec(obj))
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0)), _created(obj),
            names, images, selector_string(spec.get("selector")) or "<none>"]


def _statefulset_row(obj: Json) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_template_spec(obj))
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            _created(obj), names, images]


def _replicaset_row(obj: Json) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_template_spec(obj))
    return [obj["metadata"]["name"], int(spec.get("replicas", 0)), int(status.get("replicas", 0)),
            int(status.get("readyReplicas", 0)), _created(obj), names, images,
            selector_string(spec.get("selector")) or "<none>"]


def _job_status(status: Json, spec: Json) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet", "Suspended"):
            return str(cond["type"])
    return "Suspended" if spec.get("suspend") else "Running"


def _job_row(obj: Json) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    succeeded = int(status.get("succeeded", 0))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    else:
        parallelism = int(spec.get("parallelism", 0))
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, end = _parse_time(status.get("startTime")), _parse_time(status.get("completionTime"))
    if start is None:
        duration = ""
    else:
        end = end or dt.datetime.now(dt.timezone.utc)
        duration = human_duration((end - start).total_seconds())
    names, images = _containers(_template_spec(obj))
    return [obj["metadata"]["name"], _job_status(status, spec), completions, duration, _created(obj), names,
            images, selector_string(spec.get("selector")) or "<none>"]


def _cronjob_row(obj: Json) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    last = _parse_time(status.get("lastScheduleTime"))
    since = human_duration((dt.datetime.now(dt.timezone.utc) - last).total_seconds()) if last else "<none>"
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    names, images = _containers((job_spec.get("template") or {}).get("spec") or {})
    return [obj["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            "True" if spec.get("suspend") else "False", len(status.get("active") or []), since, _created(obj),
            names, images, selector_string(job_spec.get("selector")) or "<none>"]


def _namespace_row(obj: Json) -> Row:
    return [obj["metadata"]["name"], (obj.get("status") or {}).get("phase", ""), _created(obj)]


def _event_row(ev: Json) -> Row:
    involved = ev.get("involvedObject") or {}
    first = ev.get("firstTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
    last = ev.get("lastTimestamp") or (ev.get("series") or {}).get("lastObservedTime") or first
    source = ev.get("source") or {}
    source_text = source.get("component", "") + (f", {source['host']}" if source.get("host") else "")
    return [age(last), ev.get("type", ""), ev.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", involved.get("fieldPath", ""),
            source_text or ev.get("reportingComponent", ""), (ev.get("message") or "").strip(), age(first),
            int(ev.get("count", 1) or 1), ev["metadata"]["name"]]


def _service_row(svc: Json) -> Row:
    spec = svc.get("spec") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        ",".join(spec.get("externalIPs") or []) or ("<pending>" if spec.get("type") == "LoadBalancer"
                                                    else "<none>"))
    ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                     f"{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [svc["metadata"]["name"], spec.get("type", ""), spec.get("clusterIP") or "<none>", external, ports,
            _created(svc), selector]


def _configmap_row(obj: Json) -> Row:
    return [obj["metadata"]["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}),
            _created(obj)]


def _secret_row(obj: Json) -> Row:
    return [obj["metadata"]["name"], obj.get("type", ""), len(obj.get("data") or {}), _created(obj)]


def _storageclass_row(obj: Json) -> Row:
    name = obj["metadata"]["name"]
    if (obj["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
        name += " (default)"
    return [name, obj.get("provisioner", ""), obj.get("reclaimPolicy", "Delete"),
            obj.get("volumeBindingMode", "Immediate"), bool(obj.get("allowVolumeExpansion", False)),
            _created(obj)]


def _more(items: list[str], count: int, unset: str = "<unset>") -> str:
    # listWithMoreString: at most 3 shown, then "+ N more...".
    text = ",".join(items[:3])
    if count > 3:
        return f"{text} + {count - 3} more..."
    return text or unset


def _endpoints_row(obj: Json) -> Row:
    # formatEndpoints: the ready addresses, IP:PORT for every port of their subset (bare IPs without ports).
    subsets = obj.get("subsets") or []
    shown: list[str] = []
    for ss in subsets:
        addresses = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        if not ports:
            shown += addresses
        for p in ports:
            shown += [f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}" for ip in addresses]
    text = _more(shown, len(shown), "") if subsets else "<none>"
    return [obj["metadata"]["name"], text, _created(obj)]


def _endpointslice_row(obj: Json) -> Row:
    # formatDiscoveryPorts / formatDiscoveryEndpoints.
    ports = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*") for p in obj.get("ports") or []]
    addresses = [a for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []]
    return [obj["metadata"]["name"], obj.get("addressType", ""), _more(ports, len(ports)),
            _more(addresses, len(addresses)), _created(obj)]


def _default_row(obj: Json) -> Row:
    return [obj["metadata"]["name"], _created(obj)]


Column = tuple[str, str, str, str, int]


def _c(name: str, priority: int = 0, kind: str = "string", desc: str = "") -> Column:
    return (name, kind, "", desc, priority)


_PRINTERS: dict[str, tuple[list[Column], Callable[[Json], Row]]] = {
    "pods": ([_NAME, _c("Ready"), _c("Status"), _c("Restarts"), _AGE, _c("IP", 1), _c("Node", 1),
              _c("Nominated Node", 1), _c("Readiness Gates", 1)], _pod_row),
    "nodes": ([_NAME, _c("Status"), _c("Roles"), _AGE, _c("Version"), _c("Internal-IP", 1), _c("External-IP", 1),
               _c("OS-Image", 1), _c("Kernel-Version", 1), _c("Container-Runtime", 1)], _node_row),
    "persistentvolumeclaims": ([_NAME, _c("Status"), _c("Volume"), _c("Capacity"), _c("Access Modes"),
                                _c("StorageClass"), _c("VolumeAttributesClass"), _AGE, _c("VolumeMode", 1)],
                               _pvc_row),
    "persistentvolumes": ([_NAME, _c("Capacity"), _c("Access Modes"), _c("Reclaim Policy"), _c("Status"),
                           _c("Claim"), _c("StorageClass"), _c("VolumeAttributesClass"), _c("Reason"), _AGE,
                           _c("VolumeMode", 1)], _pv_row),
    "deployments.apps": ([_NAME, _c("Ready"), _c("Up-to-date", kind="integer"), _c("Available", kind="integer"),
                          _AGE, _c("Containers", 1), _c("Images", 1), _c("Selector", 1)], _deployment_row),
    "statefulsets.apps": ([_NAME, _c("Ready"), _AGE, _c("Containers", 1), _c("Images", 1)], _statefulset_row),
    "replicasets.apps": ([_NAME, _c("Desired", kind="integer"), _c("Current", kind="integer"),
                          _c("Ready", kind="integer"), _AGE, _c("Containers", 1), _c("Images", 1),
                          _c("Selector", 1)], _replicaset_row),
    "jobs.batch": ([_NAME, _c("Status"), _c("Completions"), _c("Duration"), _AGE, _c("Containers", 1),
                    _c("Images", 1), _c("Selector", 1)], _job_row),
    "cronjobs.batch": ([_NAME, _c("Schedule"), _c("Timezone"), _c("Suspend", kind="boolean"),
                        _c("Active", kind="integer"), _c("Last Schedule"), _AGE, _c("Containers", 1),
                        _c("Images", 1), _c("Selector", 1)], _cronjob_row),
    "namespaces": ([_NAME, _c("Status"), _AGE], _namespace_row),
    "events": ([_c("Last Seen"), _c("Type"), _c("Reason"), _c("Object"), _c("Subobject", 1), _c("Source", 1),
                _c("Message"), _c("First Seen", 1), _c("Count", 1, "integer"), _c("Name", 1)], _event_row),
    "services": ([_NAME, _c("Type"), _c("Cluster-IP"), _c("External-IP"), _c("Port(s)"), _AGE,
                  _c("Selector", 1)], _service_row),
    "configmaps": ([_NAME, _c("Data", kind="integer"), _AGE], _configmap_row),
    "endpoints": ([_NAME, _c("Endpoints"), _AGE], _endpoints_row),
    "endpointslices.discovery.k8s.io": ([_NAME, _c("AddressType"), _c("Ports"), _c("Endpoints"), _AGE],
                                        _endpointslice_row),
    "secrets": ([_NAME, _c("Type"), _c("Data", kind="integer"), _AGE], _secret_row),
    "storageclasses.storage.k8s.io": ([_NAME, _c("Provisioner"), _c("ReclaimPolicy"), _c("VolumeBindingMode"),
                                       _c("AllowVolumeExpansion", kind="boolean"), _AGE], _storageclass_row),
}


def _columns(resource: str) -> tuple[list[Json], Callable[[Json], Row]]:
    columns, row = _PRINTERS.get(resource, ([_NAME, _AGE], _default_row))
    return ([{"name": n, "type": t, "format": f, "description": d, "priority": p}
             for n, t, f, d, p in columns], row)


def _row_object(ctx: Context, obj: Json) -> Json | None:
    include = ctx.query.get("includeObject", "Metadata")
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def _rows(ctx: Context, items: list[Json]) -> list[Json]:
    _, row = _columns(ctx.res.key)
    rows = []
    for obj in items:
        entry: Json = {"cells": row(obj)}
        included = _row_object(ctx, obj)
        if included is not None:
            entry["object"] = included
        rows.append(entry)
    return rows


def table(ctx: Context, items: list[Json], list_meta: Json) -> Json:
    columns, _ = _columns(ctx.res.key)
    for item in items:
        api_version = (f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version)
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", ctx.res.kind)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": columns,
            "rows": _rows(ctx, items)}


def table_event(ctx: Context, obj: Json) -> Json:
    """A watch event's object as a one-row Table, as a real server sends to ``kubectl get -w``."""
    columns, _ = _columns(ctx.res.key)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
            "columnDefinitions": columns, "rows": _rows(ctx, [obj])}
