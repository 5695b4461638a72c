"""The CronJob of `kubectl dr schedule create etcd-snapshot`: a plain Kubernetes object, nothing else.

One run is one Job with one pod on one etcd node: it snapshots the member on the node it runs on
(through that member's own client URL on the host network) into the node's snapshot directory and keeps
the newest N there. A snapshot of any member holds the whole keyspace, so one per run is enough; letting
the scheduler pick among the etcd nodes (or the ones given with --node) keeps the schedule running while
a node is down, and spreads the snapshots over the nodes, so losing one node loses only its share.

The pod: the etcd static pod's own image (already on the node) for etcdctl, busybox for what that image
lacks; host network; the three certificate files it needs (CA, kubeadm's healthcheck client certificate
and key) mounted read-only one by one rather than the whole pki directory (the members' server and peer
keys stay out of reach); the snapshot directory read-write; no service-account token; an
activeDeadlineSeconds; tolerations for the control-plane taints (and a NotReady node's NoExecute, since
etcd may be the reason); required node affinity to the etcd nodes.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.etcd import etcdctl
from kubectl_dr.etcd.restore.targets import DR_DIR as RESTORE_DIR
from kubectl_dr.etcd.restore.targets import host_path_of
from kubectl_dr.etcd.topology import ETCD_NAMESPACE, ETCD_SELECTOR, Discovered, StaticMember, parse_flags
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.pods import LABEL_MANAGED, LABEL_PURPOSE, MANAGED_BY
from kubectl_dr.schedules import scripts

SCHEDULE_LABEL = "kubectl-dr.io/schedule"
WHAT_LABEL = "kubectl-dr.io/schedule-kind"
KEEP_ANNOTATION = "kubectl-dr.io/keep"
DIR_ANNOTATION = "kubectl-dr.io/snapshot-dir"
DEFAULT_DIR = "/var/lib/kubectl-dr/snapshots"
DEFAULT_HELPER_IMAGE = "busybox"
# A run saves, reads back and hashes the database: an hour covers many GB; a hung member fails the run.
JOB_DEADLINE_SECONDS = 3600
PURPOSE = "etcd-snapshot-schedule"
ETCD_CONTAINER = "snapshot"
FINISH_CONTAINER = "finish"
TOLERATIONS = [
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]
_NAME_MAX = 52  # the CronJob controller appends -<11 digits> for its Jobs (63 - 11)


@dataclass(frozen=True)
class EtcdScheduleSpec:
    name: str
    namespace: str
    cron: str
    keep: int
    time_zone: str | None
    nodes: tuple[str, ...]  # the etcd nodes a run may use (all of them unless --node)
    directory: str
    helper_image: str


def check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > _NAME_MAX:
        raise UsageError(f"invalid schedule name {name!r}: lowercase letters, digits and '-', starting and ending "
                         f"with a letter or digit, at most {_NAME_MAX} characters (a CronJob's limit)")


# Where snapshots must never go, with why: the whole tree below each (or only the directory itself).
_SYSTEM = "a system directory"
_OWN = "kubectl dr's own (the staging of etcd restores)"
_REFUSED_TREES = (
    ("/etc/kubernetes", "which the control plane owns (kubeadm's manifests, PKI and configuration)"),
    ("/var/lib/etcd", "which the control plane owns (etcd's data)"),
    ("/var/lib/kubelet", "which the kubelet owns (the pods' volumes)"),
    (RESTORE_DIR, _OWN),
    *((top, _SYSTEM) for top in ("/usr", "/bin", "/sbin", "/boot", "/proc", "/sys", "/dev", "/run")),
)
_REFUSED_EXACT = {"/": _SYSTEM, "/etc": _SYSTEM, "/var": _SYSTEM, "/var/lib": _SYSTEM,
                  posixpath.dirname(RESTORE_DIR): _OWN}


def check_directory(directory: str, data_dirs: Sequence[str] = ()) -> None:
    """Refuse a --dir that is not a directory of its own: the Job writes and prunes files there as root.

    ``data_dirs`` are the members' etcd data directories on their nodes (wherever a cluster keeps them).
    """
    def refuse(why: str) -> UsageError:
        return UsageError(f"--dir {directory!r} {why}; snapshots need a directory of their own on the node, "
                          f"e.g. {DEFAULT_DIR}")

    if not directory.startswith("/"):
        raise refuse("is not an absolute path")
    if ".." in directory.split("/"):
        raise refuse("contains '..': give the directory itself")
    # normpath keeps a leading "//" (POSIX leaves its meaning open): one slash is what the node sees.
    clean = "/" + posixpath.normpath(directory).lstrip("/")
    if clean in _REFUSED_EXACT:
        raise refuse(f"is {clean}, {_REFUSED_EXACT[clean]}")
    top = "/" + clean.split("/")[1]
    libs = [(top, _SYSTEM)] if top in ("/lib", "/lib32", "/lib64", "/libx32") else []
    data = [(d.rstrip("/"), "the etcd data directory of a member") for d in data_dirs if d.strip("/")]
    for tree, why in [*_REFUSED_TREES, *libs, *data]:
        if clean == tree or clean.startswith(tree.rstrip("/") + "/"):
            raise refuse(f"is {'' if clean == tree else 'inside '}{tree}, {why}")


def member_data_dirs(kube: Kube) -> list[str]:
    """The etcd data directory of each member, on its node (through the static pod's hostPath volumes)."""
    pods = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=ETCD_SELECTOR).get("items") or []
    return [d for d in map(data_dir_of, pods) if d]


def data_dir_of(pod: dict[str, Any]) -> str | None:
    """The node path of an etcd pod's --data-dir, or None when it is not on a hostPath volume."""
    containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == "etcd"), containers[0] if containers else None)
    if container is None:
        return None
    flags = parse_flags(list(container.get("command") or []) + list(container.get("args") or []))
    in_pod = flags.get("data-dir")
    return host_path_of(pod, container, in_pod) if in_pod else None


def members_for(topology: Discovered, nodes: tuple[str, ...]) -> list[StaticMember]:
    """The members a run may snapshot; they must share one image and one certificate layout."""
    members = [topology.member(n) for n in nodes] if nodes else list(topology.members)
    images = sorted({m.image for m in members})
    if len(images) > 1:
        raise DrError(f"the etcd members run different images ({', '.join(images)}): one schedule uses one image",
                      hint="Finish the upgrade first, or make one schedule per image with --node.")
    layouts = {tuple((f.role, f.host_path, f.container_path) for f in m.client_files) for m in members}
    if len(layouts) > 1:
        raise DrError("the etcd members keep their certificates in different places: one schedule mounts one set",
                      hint="Make one schedule per node with --node.")
    return members


def cronjob(spec: EtcdScheduleSpec, members: list[StaticMember]) -> dict[str, Any]:
    first = members[0]
    labels = {LABEL_MANAGED: MANAGED_BY, LABEL_PURPOSE: PURPOSE, SCHEDULE_LABEL: spec.name, WHAT_LABEL: "etcd-snapshot"}
    cert_volumes = [{"name": f"etcd-{f.role}", "hostPath": {"path": f.host_path, "type": "File"}}
                    for f in first.client_files]
    cert_mounts = [{"name": f"etcd-{f.role}", "mountPath": f.container_path, "readOnly": True}
                   for f in first.client_files]
    snap_mount = {"name": "snapshots", "mountPath": scripts.SNAPSHOT_MOUNT}
    info_mount = {"name": "info", "mountPath": scripts.INFO_MOUNT}
    base_env = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TZ", "value": "UTC"},
    ]
    ctl = etcdctl.command(first, ["X"], timeouts=False)
    ctl = [a for a in ctl if not a.startswith("--endpoints=")]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
        "terminationGracePeriodSeconds": 10,
        "tolerations": TOLERATIONS,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": sorted(m.node for m in members)}]}]}}},
        "volumes": [*cert_volumes,
                    {"name": "snapshots", "hostPath": {"path": spec.directory, "type": "DirectoryOrCreate"}},
                    {"name": "info", "emptyDir": {}}],
        "initContainers": [{
            "name": ETCD_CONTAINER, "image": first.image, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", scripts.etcd_script({m.node: m.client_url for m in members}, ctl)],
            "env": [*base_env, {"name": "ETCDCTL_API", "value": "3"}],
            "volumeMounts": [*cert_mounts, snap_mount, info_mount],
        }],
        "containers": [{
            "name": FINISH_CONTAINER, "image": spec.helper_image, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", scripts.finish_script(spec.name, spec.keep)],
            "env": [*base_env, {"name": "ETCD_IMAGE", "value": first.image}],
            "volumeMounts": [snap_mount, info_mount],
        }],
    }
    cron_spec: dict[str, Any] = {
        "schedule": spec.cron,
        "concurrencyPolicy": "Forbid",
        # After an outage, one late run rather than none (and never a pile of them).
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "backoffLimit": 1,
                "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            },
        },
    }
    if spec.time_zone:
        cron_spec["timeZone"] = spec.time_zone
    # Shared dicts would print as YAML anchors in `-o yaml`: every part of the object is its own.
    obj: dict[str, Any] = json.loads(json.dumps({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {KEEP_ANNOTATION: str(spec.keep), DIR_ANNOTATION: spec.directory,
                            "kubectl-dr.io/description": "etcd snapshots into a node-local directory, made by "
                                                         "kubectl dr schedule create etcd-snapshot"},
        },
        "spec": cron_spec,
    }))
    return obj
