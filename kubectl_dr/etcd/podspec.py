"""Pod manifests for the etcd helper pods.

Both end by themselves: the status pod after `STATUS_DEADLINE_SECONDS` (its work takes seconds), the
snapshot pod when its run stops touching it (the serve container's dead-man loop deletes the snapshot,
which holds every Secret of the cluster, and ends the pod), and at the latest after
`SNAPSHOT_DEADLINE_SECONDS`. Both carry the run's id and lease, so a later run knows a dead run's pod.

Both are pinned to the member's node with `nodeName` (they must run when the scheduler is down, and on
that node only, where the member and its certificates are), tolerate every taint (control-plane
NoSchedule; a NotReady node's NoExecute while etcd is the reason it is not ready), share the host network
(the member listens on the node's addresses, often on loopback), and mount only the three certificate
files they need, read-only, each as a hostPath of type File: a missing file then fails the mount with the
file's path in the kubelet's message instead of an obscure TLS error later.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from kubectl_dr.etcd import etcdctl
from kubectl_dr.etcd.topology import StaticMember
from kubectl_dr.kube.pods import host_path_volume, pod_manifest, pod_name
from kubectl_dr.runs import Run
from kubectl_dr.runs.heartbeat import dead_man_script, pod_grace_seconds

SNAPSHOT_DIR = "/snapshot"
SNAPSHOT_FILE = f"{SNAPSHOT_DIR}/etcd.db"
CERT_VOLUMES = {"ca": "etcd-ca", "cert": "etcd-client-cert", "key": "etcd-client-key"}
STATUS_CONTAINER = "etcdctl"
SNAPSHOT_CONTAINER = "snapshot"
MEMBER_STATUS_CONTAINER = "member-status"
# The snapshot pod's containers that end by themselves (with exit code 0 when all is well) beside the serve one.
SNAPSHOT_JOBS = (MEMBER_STATUS_CONTAINER, SNAPSHOT_CONTAINER)
SERVE_CONTAINER = "serve"
# Keeps the etcd-image container of the status pod alive for our execs: that image has no shell and no
# sleep, but a watch on a key nobody writes waits quietly until the pod is deleted.
KEEPALIVE_KEY = "/kubectl-dr/keepalive"
ALIVE = f"{SNAPSHOT_DIR}/.kubectl-dr-alive"
# Made by the serve container before it removes the snapshot (no heartbeat, or the pod deleted): the follow
# script then says who removed the part file, not that etcdctl gave up.
ENDED = f"{SNAPSHOT_DIR}/.kubectl-dr-ended"
STATUS_DEADLINE_SECONDS = 600
# Saving a multi-GB database, then copying it off: hours at most.
SNAPSHOT_DEADLINE_SECONDS = 4 * 3600


ENCRYPTION_DIR = "/encryption-config"  # the API server's encryption config directory, read-only
ENCRYPTION_COPY = f"{SNAPSHOT_DIR}/encryption-config"
ENCRYPTION_INIT = "encryption-config"


def serve_script(grace: int) -> str:
    """The serve container's main process: holds the snapshot while the run is alive, then removes it (and the
    copy of the encryption config: its keys decrypt every Secret in the snapshot)."""
    return dead_man_script(ALIVE, grace,
                           # The part file first: a rename between the two unlinks would leave a whole FILE (every
                           # Secret of the cluster) behind. Then a second's pause: this shell is the container's
                           # PID 1, and its exit kills the follow script before it could say who removed the file.
                           on_expiry=f"touch {ENDED}; rm -f {SNAPSHOT_FILE}.part {SNAPSHOT_FILE} {ENCRYPTION_COPY}; "
                                     "sleep 1",
                           then="removing the snapshot")


def _cert_volumes(member: StaticMember) -> list[dict[str, Any]]:
    return [{"name": CERT_VOLUMES[f.role], "hostPath": {"path": f.host_path, "type": "File"}}
            for f in member.client_files]


def _cert_mounts(member: StaticMember) -> list[dict[str, Any]]:
    return [{"name": CERT_VOLUMES[f.role], "mountPath": f.container_path, "readOnly": True}
            for f in member.client_files]


def _etcd_container(member: StaticMember, name: str, cmd: list[str], extra_mounts: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    return {
        "name": name,
        "image": member.image,
        # The static pod's own image: already on the node, so this works without a registry.
        "imagePullPolicy": "IfNotPresent",
        "command": cmd,
        "env": [{"name": "ETCDCTL_API", "value": "3"}],
        "volumeMounts": _cert_mounts(member) + extra_mounts,
    }


def _pod(member: StaticMember, namespace: str, prefix: str, purpose: str, run: Run | None, lease: str | None,
         deadline: int) -> dict[str, Any]:
    """Containers are added by the callers: a status pod and a snapshot pod differ only there."""
    return pod_manifest(pod_name(prefix, member.node), namespace, purpose=purpose, node=member.node,
                        deadline=deadline, labels=run.labels() if run else {},
                        annotations=run.annotations(lease) if run else {}, volumes=_cert_volumes(member),
                        hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet", containers=[])


def status_pod(member: StaticMember, namespace: str, run: Run | None = None) -> dict[str, Any]:
    """One etcdctl container we exec into for member list, endpoint status/health and alarms."""
    pod = _pod(member, namespace, "dr-etcd-status", "etcd-status", run, None, STATUS_DEADLINE_SECONDS)
    keepalive = etcdctl.command(member, [member.client_url], "watch", KEEPALIVE_KEY, timeouts=False)
    # The watch retries quietly forever when the member refuses us; this init container fails instead,
    # with etcdctl's reason in its log, exactly as in the snapshot pod.
    pod["spec"]["initContainers"] = [_member_status(member)]
    pod["spec"]["containers"] = [_etcd_container(member, STATUS_CONTAINER, keepalive, [])]
    return pod


def _member_status(member: StaticMember) -> dict[str, Any]:
    return _etcd_container(member, MEMBER_STATUS_CONTAINER,
                           etcdctl.command(member, [member.client_url], "endpoint", "status", "-w", "json"), [])


def snapshot_pod(member: StaticMember, namespace: str, helper_image: str, run: Run | None = None,
                 lease: str | None = None, encryption_config: str | None = None) -> dict[str, Any]:
    """The member's status and the snapshot's save run beside the helper container that serves the file, so the
    file can be streamed while etcdctl writes it (snapshot_follow.py); both end by themselves, and the client
    reads their exit codes from the pod's status (a save that fails is never kept).

    `encryption_config`: the API server's encryption config on the node. Copied first, in an init container (the
    keys the snapshot's Secrets were written with are the ones configured before it is taken), in this pod, so the
    snapshot needs no second pod for its fingerprint. A copy that fails is recorded, not fatal (its error file
    says why)."""
    pod = _pod(member, namespace, "dr-etcd-snapshot", "etcd-snapshot", run, lease, SNAPSHOT_DEADLINE_SECONDS)
    out = {"name": "snapshot", "mountPath": SNAPSHOT_DIR}
    endpoint = [member.client_url]
    pod["spec"]["volumes"].append({"name": "snapshot", "emptyDir": {}})
    if encryption_config is not None:
        directory, name = posixpath.split(encryption_config)
        pod["spec"]["volumes"].append(host_path_volume("encryption-config", directory))
        pod["spec"]["initContainers"] = [
            {"name": ENCRYPTION_INIT, "image": helper_image, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", f"cp {shlex.quote(posixpath.join(ENCRYPTION_DIR, name))} {ENCRYPTION_COPY} "
                                     f"2>{ENCRYPTION_COPY}.error || true"],
             "volumeMounts": [out, {"name": "encryption-config", "mountPath": ENCRYPTION_DIR, "readOnly": True}]}]
    pod["spec"]["containers"] = [
        # The manifest records the member's ID, version and revision from this log; a member that is down or
        # refuses our certificate fails here too, and its log says so in etcdctl's words.
        _member_status(member),
        # No command timeout: a large database takes as long as it takes. etcdctl writes FILE.part and renames
        # it to FILE once it is whole and synced; the serve container follows the part file meanwhile.
        _etcd_container(member, SNAPSHOT_CONTAINER,
                        etcdctl.command(member, endpoint, "snapshot", "save", SNAPSHOT_FILE, timeouts=False),
                        [out]),
        {"name": SERVE_CONTAINER, "image": helper_image, "imagePullPolicy": "IfNotPresent",
         "command": ["sh", "-c", serve_script(pod_grace_seconds())], "volumeMounts": [out]},
    ]
    return pod
