"""`kubectl dr etcd restore status|finalize|rollback`: from the records each node keeps of the last restore.

The record lives on the control-plane nodes (our directory there), read through a pod: it survives the
restore itself, which a ConfigMap written after the snapshot would not, and any machine with the kubeconfig
can finish the job.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.restore import job, nodescript
from kubectl_dr.etcd.restore.nodepod import NodePod, start_all
from kubectl_dr.etcd.restore.nodescript import HOST_DR
from kubectl_dr.etcd.restore.targets import KUBERNETES_DIR, Target, targets
from kubectl_dr.kube.client import Kube
from kubectl_dr.runs import Run


@dataclass
class NodeState:
    node: str
    run_id: str | None
    record: dict[str, Any] | None
    restore: list[tuple[int, str, str]]
    rollback: list[tuple[int, str, str]]
    finalized: bool
    aborted: bool
    before_present: bool
    restored_present: bool

    @property
    def state(self) -> str:
        if self.run_id is None:
            return "none"
        if self.finalized:
            return "finalized"
        for name, rows in (("rollback", self.rollback), ("restore", self.restore)):
            if rows:
                return f"{name}: {rows[-1][1]}"
        return "aborted before the hand-over (nothing changed)" if self.aborted else "staged (never handed over)"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "runID": self.run_id, "state": self.state, "finalized": self.finalized,
                "oldDataDirPresent": self.before_present, "restoredDataDirPresent": self.restored_present,
                "restore": [{"time": t, "step": s, "detail": d} for t, s, d in self.restore],
                "rollback": [{"time": t, "step": s, "detail": d} for t, s, d in self.rollback],
                "record": self.record}


def _read(node: NodePod) -> NodeState:
    text = node.sh(f"cat {HOST_DR}/{job.LAST} 2>/dev/null; true", what="reading the last restore")
    run_id = text.strip() or None
    if run_id is None or not all(c.isalnum() or c in "-_" for c in run_id):
        return NodeState(node.target.node, None, None, [], [], False, False, False, False)
    d = f"{HOST_DR}/{run_id}"
    raw = node.sh(f"cat {d}/record.json 2>/dev/null; true", what="reading the run record")
    try:
        record = json.loads(raw) if raw.strip() else None
    except ValueError:
        record = None
    restore = nodescript.parse_status(node.sh(f"cat {d}/status-restore 2>/dev/null; true", what="reading status"))
    rollback = nodescript.parse_status(node.sh(f"cat {d}/status-rollback 2>/dev/null; true", what="reading status"))
    marks = node.sh(f"test -e {d}/finalized && echo finalized; test -e {d}/aborted && echo aborted; true",
                    what="reading status").split()
    before = restored = False
    if record:
        member = next((m for m in record.get("members") or [] if m.get("node") == node.target.node), None)
        if member:
            swap = _swap(record, node.target)
            present = node.sh(f"test -d {shlex.quote(swap.in_pod(member['before']))} && echo before; "
                              f"test -d {shlex.quote(swap.in_pod(member['restored']))} && echo restored; true",
                              what="looking at the data dirs")
            before, restored = "before" in present, "restored" in present
    return NodeState(node.target.node, run_id, record, restore, rollback, "finalized" in marks, "aborted" in marks,
                     before, restored)


def _swap(record: dict[str, Any], t: Target) -> nodescript.NodeSwap:
    member = next(m for m in record["members"] if m["node"] == t.node)
    return nodescript.NodeSwap(run_id=record["runID"], mode="restore", node=t.node, kubernetes_dir=KUBERNETES_DIR,
                               manifests_dir=f"{KUBERNETES_DIR}/manifests", data_dir=member["dataDir"],
                               incoming=member["restored"], aside=member["before"], dr_dir=job.DR_DIR,
                               health_url="", metrics_url="", peers=0, readyz_url="")


def states(kube: Kube, namespace: str, helper_image: str) -> list[NodeState]:
    found = targets(kube)
    nodes = start_all(kube, found, namespace, helper_image, Run("etcd restore status"), job.DR_DIR, KUBERNETES_DIR,
                      "etcd-restore-status")
    try:
        return [_read(n) for n in nodes]
    finally:
        for n in nodes:
            n.delete()


def _one_run(found: list[NodeState]) -> str:
    runs = {s.run_id for s in found}
    if runs == {None}:
        raise EtcdError("no etcd restore was made on this cluster's control-plane nodes")
    if len(runs) != 1:
        raise EtcdError(f"the control-plane nodes disagree about the last restore: "
                        f"{', '.join(f'{s.node}: {s.run_id}' for s in found)}",
                        hint="Follow the break-glass runbook written by that restore.")
    return str(next(iter(runs)))


def finalize(kube: Kube, namespace: str, helper_image: str, console: Console, dry_run: bool) -> dict[str, Any]:
    """Remove the old data dirs of the last restore, once every node finished it."""
    found = targets(kube)
    nodes = start_all(kube, found, namespace, helper_image, Run("etcd restore finalize"), job.DR_DIR,
                      KUBERNETES_DIR, "etcd-restore-finalize")
    try:
        st = [_read(n) for n in nodes]
        run_id = _one_run(st)
        bad = [f"{s.node} ({s.state})" for s in st if s.state not in ("restore: done", "rollback: done",
                                                                          "finalized")]
        if bad:
            raise EtcdError(f"restore {run_id} did not finish on every node: {', '.join(bad)}",
                            hint="Only a restore (or rollback) that finished everywhere can be finalized.")
        removals = []
        for n, s in zip(nodes, st, strict=True):
            if s.finalized:
                continue
            swap = _swap(s.record or {}, n.target)
            # After a restore the old data sits aside; after a rollback the restored one does.
            gone = swap.aside if s.state == "restore: done" else swap.incoming
            removals.append((n, swap.in_pod(gone), gone))
        plan = {"kind": "EtcdRestoreFinalize", "runID": run_id, "dryRun": dry_run,
                "remove": [{"node": n.target.node, "path": host} for n, _, host in removals]}
        if dry_run or not removals:
            return plan
        console.confirm(f"delete the old etcd data dirs of restore {run_id} on "
                        f"{', '.join(n.target.node for n, _, _ in removals)} (no rollback after this)")
        for n, path, host in removals:
            console.say(f"removing {host} on node {n.target.node}")
            n.sh(f"rm -rf {shlex.quote(path)} && touch {HOST_DR}/{run_id}/finalized", what="finalizing")
        return plan
    finally:
        for n in nodes:
            n.delete()


def rollback(kube: Kube, namespace: str, helper_image: str, console: Console, dry_run: bool,
             say: Callable[[str], None]) -> job.Outcome | dict[str, Any]:
    """Put the old data dirs back with the same self-driving static pods, the other way round."""
    found = targets(kube)
    run = Run("etcd restore rollback")
    nodes = start_all(kube, found, namespace, helper_image, run, job.DR_DIR, KUBERNETES_DIR, "etcd-restore-rollback")
    try:
        st = [_read(n) for n in nodes]
        run_id = _one_run(st)
        bad = [f"{s.node} ({s.state}{'' if s.before_present else ', old data dir gone'})" for s in st
               if s.state != "restore: done" or not s.before_present]
        if bad:
            raise EtcdError(f"restore {run_id} cannot be rolled back: {', '.join(bad)}",
                            hint="A rollback needs a restore that finished on every node and its old data dirs "
                                 "(kept until `finalize`).")
        record = st[0].record or {}
        plan = {"kind": "EtcdRestoreRollback", "runID": run_id, "dryRun": dry_run,
                "nodes": [{"node": n.target.node, "putBack": _swap(s.record or {}, n.target).aside}
                          for n, s in zip(nodes, st, strict=True)]}
        if dry_run:
            return plan
        console.confirm(f"roll etcd back to the data it had before restore {run_id} on every control-plane node "
                        "(the API server is down meanwhile; changes made since the restore are set aside)")
        p = _plan_from_record(record, found, namespace, helper_image)
        for n in nodes:
            _hand_over_rollback(n, p)
        say("handed over: the nodes put their old data dirs back on their own")
    finally:
        for n in nodes:
            with contextlib.suppress(DrError):
                n.delete()
    return job.finish(kube, run_id, "rollback", found, namespace, helper_image, say)


def _plan_from_record(record: dict[str, Any], found: list[Target], namespace: str, helper_image: str) -> job.Plan:
    run = Run("etcd restore rollback", id=str(record["runID"]))
    by_node = {m["node"]: m for m in record.get("members") or []}
    for t in found:
        if t.node not in by_node or by_node[t.node]["dataDir"] != t.data_dir:
            raise EtcdError(f"node {t.node} is not the member restore {record['runID']} recorded",
                            hint="The control plane changed since the restore; follow the runbook by hand.")
    return job.Plan(run=run, targets=found, snapshot=None, image="",
                    tool_version="", bump=False, token="", initial_cluster="", cluster_version="",
                    revision_before=None, helper_image=helper_image, namespace=namespace)


def _hand_over_rollback(node: NodePod, p: job.Plan) -> None:
    job._hand_over(node, p, "rollback")
