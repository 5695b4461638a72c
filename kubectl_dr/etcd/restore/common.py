"""What the stacked restore (job.py), the external one (external.py) and the rollback (manage.py) share.

The restore lease, the wait for the API server to come back, the outcome and its failure, the object counts
before and after, the snapshot's version check, the pods that come back with the restored data, and the pod of
the cluster's own etcd image that runs etcdctl on a node.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup, units
from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.restore import nodescript
from kubectl_dr.etcd.restore.source import LocalSnapshot, minor_of
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.pods import (
    LABEL_MANAGED,
    LABEL_PURPOSE,
    MANAGED_BY,
    HelperPod,
)
from kubectl_dr.nodes import kubelet_restart
from kubectl_dr.nodes.kubelet_restart import Restarted
from kubectl_dr.runs import Heartbeat, Lease, Run, lease_name
from kubectl_dr.runs.leases import remove_restored
from kubectl_dr.runs.run import LEASE_ANNOTATION, RUN_ID_LABEL

LAST = "LAST"
API_WAIT_SECONDS = 1200.0
COUNTED = ("namespaces", "nodes", "pods", "services", "configmaps", "secrets", "serviceaccounts",
           "persistentvolumeclaims", "persistentvolumes", "deployments.apps", "statefulsets.apps",
           "daemonsets.apps", "jobs.batch", "cronjobs.batch")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def count_objects(kube: Kube) -> dict[str, int]:
    counts = {}
    for resource in COUNTED:
        name, _, group = resource.partition(".")
        path = f"/apis/{group}/v1/{name}" if group else f"/api/v1/{name}"
        try:
            counts[resource] = len(kube.get(path).get("items") or [])
        except DrError:
            continue
    return counts


def names(kube: Kube, path: str) -> list[str]:
    items = kube.get(path).get("items") or []
    return sorted(f"{i['metadata'].get('namespace') + '/' if i['metadata'].get('namespace') else ''}"
                  f"{i['metadata']['name']}" for i in items)


def check_snapshot(snapshot: LocalSnapshot, cluster_version: str) -> None:
    snap_minor = snapshot.minor
    if snap_minor is None and minor_of(cluster_version) not in ("3.4", "3.3"):
        raise EtcdError(f"the snapshot does not say which etcd wrote it (no cluster version in the database, no "
                        f"backup manifest), and the cluster runs etcd {cluster_version}",
                        hint="A restore needs a snapshot of the same etcd major.minor as the cluster.")
    if snap_minor is not None and snap_minor != minor_of(cluster_version):
        raise EtcdError(f"the snapshot is from etcd {snapshot.version} but the cluster runs etcd {cluster_version}: "
                        "a restore needs the same major.minor",
                        hint="Restore it on a cluster of that etcd version, or take a snapshot of this one.")


def wait_api(kube: Kube, console: Console, timeout: float = API_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    down_seen = False
    told = 0.0
    while time.monotonic() < deadline:
        try:
            if kube.text("/readyz").strip() == "ok" and down_seen:
                return
        except DrError:
            down_seen = True
        if not down_seen and time.monotonic() > deadline - timeout + 120:
            return  # never went down: the nodes gave up before stopping it; their status says why
        if time.monotonic() - told > 30:
            told = time.monotonic()
            console.say("waiting for the API server (the nodes are working on their own; `kubectl dr etcd restore "
                        "status` shows their steps once it answers)")
        time.sleep(0.5)  # one GET of /readyz: the API server's return is seen within half a second
    raise DrError(f"the API server did not come back within {units.duration(timeout)}",
                  hint="The nodes roll back by themselves when etcd does not form a cluster in time. Check each "
                       "node's status file (see the break-glass runbook) or run `kubectl dr etcd restore status`.")


@dataclass
class Outcome:
    mode: str
    run_id: str
    nodes: dict[str, list[tuple[int, str, str]]]
    revision_before: int | None = None
    revision_after: int | None = None
    members: list[str] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    nodes_gone: list[str] = field(default_factory=list)
    pods_gone: list[str] = field(default_factory=list)
    runbook: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # what one kind of restore adds (external: keys)
    kubelet_restarts: list[Restarted] = field(default_factory=list)
    # The restore stands but something after it failed (a kubelet restart): shown with the outcome, then raised.
    failure: DrError | None = None

    @property
    def ok(self) -> bool:
        return all(rows and rows[-1][1] == nodescript.DONE for rows in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdRestoreResult", "mode": self.mode, "runID": self.run_id, "succeeded": self.ok,
                "nodes": {n: [{"time": t, "step": s, "detail": d} for t, s, d in rows]
                          for n, rows in self.nodes.items()},
                "revisionBefore": self.revision_before, "revisionAfter": self.revision_after,
                "members": self.members, "counts": {k: {"before": b, "after": a} for k, (b, a) in self.counts.items()},
                "nodesGone": self.nodes_gone, "podsGone": self.pods_gone, "runbook": self.runbook, **self.details,
                **({"kubeletRestarts": [r.to_dict() for r in self.kubelet_restarts]} if self.kubelet_restarts
                   else {})}

    def summary(self) -> str:
        lines = [f"etcd {self.mode} {self.run_id} completed on every node"]
        if self.revision_before is not None or self.revision_after is not None:
            # A revision nobody could read is said so, not printed as "None".
            lines.append(f"revision: {_revision(self.revision_before)} before, {_revision(self.revision_after)} "
                         "after")
        if self.members:
            lines.append(f"members: {', '.join(self.members)}")
        for name, (before, after) in sorted(self.counts.items()):
            lines.append(f"  {name}: {before} → {after}")
        if self.nodes_gone:
            lines.append(f"Nodes the restored state does not have (they register again when their kubelet next "
                         f"reaches the API): {', '.join(self.nodes_gone)}")
        if self.pods_gone:
            lines.append(f"pods the restored state does not have (their kubelets stop them): "
                         f"{', '.join(self.pods_gone[:50])}{' …' if len(self.pods_gone) > 50 else ''}")
        for r in self.kubelet_restarts:
            lines.append(f"kubelet on {r.node}: {r.result if r.result != 'failed' else 'NOT restarted'} ({r.detail})")
        keys = self.details.get("keys")
        if keys:
            lines.append(f"keys: {keys['put']} written, {keys['deleted']} deleted, {keys['unchanged']} unchanged")
        if self.details.get("etcdTopology") == "external":
            if self.details.get("safetySnapshot"):
                lines.append(f"the data as it was before is safety snapshot {self.details['safetySnapshot']}: "
                             "restore --from it (with the same --endpoints) to go back")
        elif self.mode == "restore":
            lines.append("the old data dirs stay on the nodes: `kubectl dr etcd restore finalize` removes them, "
                         "`kubectl dr etcd restore rollback` puts them back")
        return "\n".join(lines) + "\n"


def _revision(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def restart_kubelets(kube: Kube, namespace: str, image: str, run: Run, console: Console, outcome: Outcome) -> None:
    """After a restore or rollback, as the kubernetes.io procedure asks. A restart that failed is the outcome's
    failure: the restore itself stands, and the output says so before the command fails."""
    outcome.kubelet_restarts = kubelet_restart.restart_all(kube, namespace=namespace, image=image, run=run,
                                                           console=console)
    failed = [r for r in outcome.kubelet_restarts if not r.ok]
    if failed:
        outcome.failure = DrError(
            f"etcd was restored, but the kubelet restart failed on {', '.join(r.node for r in failed)}: "
            + "; ".join(f"{r.node}: {r.detail}" for r in failed),
            hint="Restart those kubelets on the nodes themselves (`systemctl restart kubelet`); until then they may "
                 "act on what they cached before the restore.")


def _last_steps(statuses: dict[str, list[tuple[int, str, str]]]) -> str:
    return ", ".join(f"{n}: {rows[-1][1] if rows else 'never started (its static pod did not run)'}"
                     for n, rows in statuses.items())


def take_lease(kube: Kube, namespace: str, run: Run, console: Console) -> cleanup.UndoStep:
    """The one lease every etcd restore holds (two at once would fight over the nodes), kept alive while held;
    its release is the returned cleanup step."""
    lease = Lease(kube, namespace, lease_name("etcd", "restore"), run, what="the etcd restore")
    lease.acquire()
    heartbeat = Heartbeat(console.warn)
    heartbeat.hold(lease)
    return cleanup.current().push("release the etcd restore lease", lambda: _release_lease(lease, heartbeat))


def _release_lease(lease: Lease, heartbeat: Heartbeat) -> None:
    heartbeat.stop()
    lease.release()


def compare_with_before(kube: Kube, outcome: Outcome, counts_before: dict[str, int], nodes_before: list[str],
                        pods_before: list[str]) -> None:
    """Object counts that changed, and the Nodes and pods the restored state no longer has."""
    after = count_objects(kube)
    outcome.counts = {k: (counts_before.get(k, 0), v) for k, v in after.items() if counts_before.get(k, 0) != v}
    try:
        nodes_now, pods_now = set(names(kube, "/api/v1/nodes")), set(names(kube, "/api/v1/pods"))
    except ApiError:
        return
    outcome.nodes_gone = [n for n in nodes_before if n not in nodes_now]
    outcome.pods_gone = [x for x in pods_before if x not in pods_now and "dr-etcd-" not in x]


def remove_restored_helpers(kube: Kube, namespace: str, console: Console) -> None:
    """Our etcd pods that came back with the data: a snapshot always contains the pod that took it. Their runs
    ended long ago (the API was down until now), so they are deleted before their kubelets start them again."""
    try:
        items = kube.get(f"/api/v1/namespaces/{namespace}/pods",
                         labelSelector=f"{LABEL_MANAGED}={MANAGED_BY}").get("items") or []
    except DrError as exc:
        console.warn(f"cannot list kubectl dr pods in {namespace}: {exc.message}")
        return
    for pod in items:
        meta = pod.get("metadata") or {}
        if not str((meta.get("labels") or {}).get(LABEL_PURPOSE, "")).startswith("etcd-"):
            continue
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            continue  # a node's own restore pod: it removes its manifest itself, and the kubelet its mirror
        console.say(f"deleting pod {namespace}/{meta.get('name')}: it came back with the restored data (a run that "
                    "is over)")
        HelperPod(kube, namespace, str(meta.get("name"))).request_delete()
        _remove_restored_lease(kube, namespace, meta, console)


def _remove_restored_lease(kube: Kube, namespace: str, meta: dict[str, Any], console: Console) -> None:
    """The lease of that pod's run (a snapshot's `kubectl-dr-etcd-MEMBER`) came back with it: it goes too."""
    lease = (meta.get("annotations") or {}).get(LEASE_ANNOTATION)
    run_id = (meta.get("labels") or {}).get(RUN_ID_LABEL)
    if not lease or not run_id:
        return
    try:
        if remove_restored(kube, namespace, str(lease), str(run_id)):
            console.say(f"deleting lease {namespace}/{lease}: it came back with the restored data (run {run_id} is "
                        "over)")
    except DrError as exc:
        console.warn(f"cannot delete lease {namespace}/{lease} of run {run_id}: {exc.message}")


class RestoreFailed(EtcdError):
    def __init__(self, outcome: Outcome) -> None:
        rolled = [n for n, rows in outcome.nodes.items() if rows and rows[-1][1] == nodescript.ROLLED_BACK]
        why = "; ".join(f"{n}: {next((d for _, s, d in reversed(rows) if s == 'rolling-back'), '')}"
                        for n, rows in outcome.nodes.items() if n in rolled)
        # A node that refused says why, first; the ones called off because of it follow.
        refused = "; ".join(f"{n}: {rows[-1][2]}" for n, rows in sorted(
            outcome.nodes.items(), key=lambda item: item[1][-1][2].startswith("called off") if item[1] else True)
            if rows and rows[-1][1] == nodescript.FAILED)
        super().__init__(
            f"the etcd {outcome.mode} did not complete ({_last_steps(outcome.nodes)})"
            + (f"; failed: {refused}" if refused else "") + (f"; rolled back: {why}" if why else ""),
            hint="Nodes that rolled back run on their previous data dir again, nothing was lost. "
                 "`kubectl dr etcd restore status` shows every node's steps.")
        self.outcome = outcome
