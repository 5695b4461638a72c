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
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.etcd import etcdctl
from kubectl_dr.etcd.topology import Discovered, StaticMember
from kubectl_dr.kube.pods import LABEL_MANAGED, LABEL_PURPOSE, MANAGED_BY
from kubectl_dr.schedules import scripts

SCHEDULE_LABEL = "kubectl-dr.io/schedule"
WHAT_LABEL = "kubectl-dr.io/schedule-kind"
KEEP_ANNOTATION = "kubectl-dr.io/keep"
DIR_ANNOTATION = "kubectl-dr.io/snapshot-dir"
DEFAULT_NAME = "kubectl-dr-etcd-snapshot"
DEFAULT_DIR = "/var/lib/kubectl-dr/snapshots"
DEFAULT_HELPER_IMAGE = "busybox"
DEFAULT_KEEP = 5
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


def check_directory(directory: str) -> None:
    clean = posixpath.normpath(directory)
    if not directory.startswith("/") or clean in ("/", "/etc", "/var", "/var/lib") or ".." in directory.split("/"):
        raise UsageError(f"--dir {directory!r}: give an absolute directory of its own on the node, "
                         f"e.g. {DEFAULT_DIR}")
    if clean.startswith(("/etc/kubernetes", "/var/lib/etcd")):
        raise UsageError(f"--dir {directory!r} is inside a directory the control plane owns; snapshots go next to "
                         f"it, not into it (e.g. {DEFAULT_DIR})")


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
