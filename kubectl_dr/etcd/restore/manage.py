"""`kubectl dr etcd restore status|finalize|rollback`: from the records each node keeps of the last restore.

The record lives on the control-plane nodes (our directory there), read through a pod: it survives the
restore itself, which a ConfigMap written after the snapshot would not, and any machine with the kubeconfig
can finish the job.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.etcd import status as etcd_status
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.restore import common, job, nodescript
from kubectl_dr.etcd.restore.nodepod import NodePod, NodePods, delete_all
from kubectl_dr.etcd.restore.nodescript import HOST_DR
from kubectl_dr.etcd.restore.targets import DR_DIR, KUBERNETES_DIR, Target, initial_cluster, targets
from kubectl_dr.etcd.snapshot_file import SnapshotStatus, verify_snapshot
from kubectl_dr.etcd.topology import Discovered, pod_namespace
from kubectl_dr.kube.client import Kube
from kubectl_dr.runs import Run
from kubectl_dr.session import Session

# The two states a node of a finished run can be in: on the restored data, or on the data from before it.
ON_RESTORED = ("restore: done", "rollback: rolled-back", "rollback: failed")
ON_BEFORE = ("rollback: done", "restore: rolled-back", "restore: failed")
# Said of the last restore's old data dir while it is there; finalize, once it removed it, leaves it out.
ROLLBACK_PUTS_IT_BACK = ": `rollback` puts it back"


@dataclass(frozen=True)
class SetAside:
    """A data dir a run set aside beside the live one (`etcd.before-RUN`, `etcd.restored-RUN`), and what it is."""

    path: str  # on the node
    run_id: str
    what: str
    removable: bool  # by finalize: no run in progress needs it, and no rollback of the last restore after finalize

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "runID": self.run_id, "what": self.what, "finalizeRemoves": self.removable}


def describe(kind: str, run_id: str, restore: str, rollback: str, flags: str,
             current: str | None) -> tuple[str, bool]:
    """What a set-aside dir is, and whether finalize may remove it: from the last steps of its run's status files
    on that node (empty: none) and the run's marks (a: aborted, f: finalized, r: record present)."""
    name = f"restore {run_id}"
    steps = f"restore {restore or 'never handed over'}, rollback {rollback or 'none'}"
    if "r" not in flags and not restore:
        return f"no record of {name} on this node: left alone", False
    if (restore and restore not in nodescript.TERMINAL) or (rollback and rollback not in nodescript.TERMINAL):
        return f"in use by {name}, still in progress on this node ({steps})", False
    if "rollback-failed" in (restore, rollback):
        return (f"{name} could not put its data dirs back on this node ({steps}): left alone, see "
                "`kubectl dr etcd restore status -o yaml`"), False
    if kind == "rollback":
        if rollback in ("", nodescript.ROLLED_BACK, nodescript.FAILED):
            why = f"the rollback {rollback} on this node" if rollback else "the rollback was never handed over"
            return f"the data from before {name} as its rollback rebuilt it, never in use ({why})", True
        return f"the data from before {name} as its rollback rebuilt it ({steps}): left alone", False
    if kind == "before":
        if restore == nodescript.DONE and rollback == nodescript.DONE:
            return f"the data from before {name}, as it was (its rollback runs on a copy, revision moved)", True
        if restore == nodescript.DONE and rollback in ("", nodescript.ROLLED_BACK, nodescript.FAILED):
            if run_id == current:
                return f"the data from before {name}, the last restore{ROLLBACK_PUTS_IT_BACK}", True
            return f"the data from before {name}, an earlier restore a later one replaced", True
        return f"the data from before {name} ({steps}): left alone", False
    if rollback == nodescript.DONE:
        return f"the data {name} restored, set aside by its rollback", True
    if restore in (nodescript.ROLLED_BACK, nodescript.FAILED):
        return f"the data {name} restored, never in use ({restore} on this node)", True
    if not restore:
        why = "aborted before its hand-over" if "a" in flags else "killed before its hand-over, or staging now"
        return f"the data {name} staged, never in use ({why})", True
    return f"the data {name} restored ({steps}): left alone", False


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
    set_aside: list[SetAside] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.run_id is None:
            return "none"
        if self.finalized:
            return "finalized"
        for name, rows in (("rollback", self.rollback), ("restore", self.restore)):
            if rows:
                return f"{name}: {rows[-1][1]}"
        if self.record is None and not self.aborted:
            return "no record of this run on the node"
        return "aborted before the hand-over (nothing changed)" if self.aborted else "staged (never handed over)"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "runID": self.run_id, "state": self.state, "finalized": self.finalized,
                "oldDataDirPresent": self.before_present, "restoredDataDirPresent": self.restored_present,
                "setAside": [a.to_dict() for a in self.set_aside],
                "restore": [{"time": t, "step": s, "detail": d} for t, s, d in self.restore],
                "rollback": [{"time": t, "step": s, "detail": d} for t, s, d in self.rollback],
                "record": self.record}


def _valid_run(run_id: str) -> bool:
    return bool(run_id) and all(c.isalnum() or c in "-_" for c in run_id)


def check_run(run: str | None) -> None:
    """A --run that cannot be a run ID is refused before any pod starts."""
    if run is not None and not _valid_run(run):
        raise EtcdError(f"--run {run!r} is not a run ID (letters, digits, '-' and '_')",
                        hint="`kubectl dr etcd restore status` shows each node's run ID.")


def _read(node: NodePod, run: str | None = None) -> NodeState:
    """The node's state of `run` (default: its last restore, LAST), and every data dir any run set aside."""
    if run is None:
        # LAST; or, when it names a run that was never handed over (earlier versions moved it at staging), the
        # newest run that was: that one is what the node's data dirs are about.
        run = node.sh(f"r=$(cat {HOST_DR}/{common.LAST} 2>/dev/null); "
                      f"if [ -n \"$r\" ] && [ ! -e \"{HOST_DR}/$r/status-restore\" ]; then "
                      f"for d in $(ls -1 {HOST_DR} | sort -r); do "
                      f"[ -e \"{HOST_DR}/$d/status-restore\" ] && {{ r=$d; break; }}; done; fi; echo \"$r\"",
                      what="reading the last restore").strip()
    run_id = run if _valid_run(run) else None
    aside = _set_aside(node, run_id)
    if run_id is None:
        return NodeState(node.target.node, None, None, [], [], False, False, False, False, aside)
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
                     before, restored, aside)


# One line per set-aside dir: KIND|RUN|last restore step|last rollback step|marks (a: aborted, f: finalized,
# r: record present). P is the data dir as our pods see it, D our directory.
_SET_ASIDE = r"""
last() { tail -n 1 "$x/$1" 2>/dev/null | cut -d' ' -f2; }
for d in "$P".before-* "$P".restored-* "$P".rollback-*; do
  [ -d "$d" ] || continue
  case "$d" in
    "$P".before-*) k=before; r=${d#"$P".before-};;
    "$P".restored-*) k=restored; r=${d#"$P".restored-};;
    *) k=rollback; r=${d#"$P".rollback-};;
  esac
  x="$D/$r"; f=
  [ -e "$x/aborted" ] && f=a; [ -e "$x/finalized" ] && f="${f}f"; [ -e "$x/record.json" ] && f="${f}r"
  printf '%s|%s|%s|%s|%s\n' "$k" "$r" "$(last status-restore)" "$(last status-rollback)" "$f"
done
true
"""


def _set_aside(node: NodePod, current: str | None) -> list[SetAside]:
    """Every `DATA.before-RUN`, `DATA.restored-RUN` and `DATA.rollback-RUN` beside the node's data dir, whichever
    run left it."""
    t = node.target
    mounts = ((DR_DIR, HOST_DR), (t.data_dir.rsplit("/", 1)[0] or "/", nodescript.HOST_DATA_PARENT))
    prefix = nodescript.in_pod(t.data_dir, mounts)
    out = node.sh(set_aside_script(prefix, HOST_DR), what="looking for data dirs set aside")
    return parse_set_aside(out, t.data_dir, current)


def set_aside_script(data_dir: str, dr_dir: str) -> str:
    """The listing script for a data dir and our directory, both as the pod sees them."""
    return f"P={shlex.quote(data_dir)}; D={shlex.quote(dr_dir)}\n{_SET_ASIDE}"


def parse_set_aside(out: str, data_dir: str, current: str | None) -> list[SetAside]:
    """The listing's lines, each described; `data_dir` is the node's path of the live data dir."""
    found = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 5 or parts[0] not in ("before", "restored", "rollback"):
            continue
        kind, run_id, restore, rollback, flags = parts
        path = f"{data_dir}.{kind}-{run_id}"
        if not _valid_run(run_id):
            found.append(SetAside(path, run_id, "not named like a run of kubectl dr: left alone", False))
            continue
        what, removable = describe(kind, run_id, restore, rollback, flags, current)
        found.append(SetAside(path, run_id, what, removable))
    return found


def _swap(record: dict[str, Any], t: Target) -> nodescript.NodeSwap:
    member = next(m for m in record["members"] if m["node"] == t.node)
    return nodescript.NodeSwap(run_id=record["runID"], mode="restore", node=t.node, kubernetes_dir=KUBERNETES_DIR,
                               manifests_dir=f"{KUBERNETES_DIR}/manifests", data_dir=member["dataDir"],
                               incoming=member["restored"], aside=member["before"], dr_dir=DR_DIR,
                               health_url="", metrics_url="", peers=0, readyz_url="")


def states(session: Session, helper_image: str, run: str | None = None) -> tuple[list[NodeState], str | None]:
    """Every node's state of the run (default: its last restore), and when the nodes disagree about their last
    restore, what settles it."""
    check_run(run)
    kube, console, namespace = session.kube, session.console, pod_namespace(session.namespace_flag)
    found = targets(kube)
    nodes = NodePods(kube, namespace, helper_image, console).start(found, Run("etcd restore status"),
                                                                   "etcd-restore-status")
    try:
        st = [_read(n, run) for n in nodes]
        runs = {s.run_id for s in st}
        return st, (_settle(nodes, st) if len(runs) > 1 else None)
    finally:
        delete_all(nodes)


def _settle(nodes: list[NodePod], st: list[NodeState]) -> str:
    """The newest run that changed the data, when it finished on every node (each node on its restored data, or
    each back on the data from before it): the command that makes it every node's last restore. A run that
    changed nothing anywhere (refused, called off, rolled back on every node) is passed over."""
    unchanged = {"restore: failed", "restore: rolled-back", "aborted before the hand-over (nothing changed)",
                 "staged (never handed over)", "no record of this run on the node"}
    # The runs the nodes name, and the ones recorded before them (a run named may have changed nothing).
    recorded = nodes[0].sh(f"ls -1 {HOST_DR} 2>/dev/null; true", what="listing the runs").split() if nodes else []
    named = {s.run_id for s in st if s.run_id} | {r for r in recorded if _valid_run(r) and r != common.LAST}
    for run_id in sorted(named, reverse=True):  # run IDs begin with their time
        there = {s.state for s in (_read(n, run_id) for n in nodes)}
        if there <= unchanged:
            continue
        if there <= {*ON_RESTORED, "finalized"}:
            return (f"every node finished restore {run_id}: `kubectl dr etcd restore finalize --run {run_id}` makes "
                    f"it the last restore everywhere and removes what is set aside"
                    + ("" if "finalized" in there else f", `kubectl dr etcd restore rollback --run {run_id}` puts "
                                                         "the data from before it back"))
        if there <= {"rollback: done", "finalized"}:
            return (f"every node is back on the data from before restore {run_id}: `kubectl dr etcd restore "
                    f"finalize --run {run_id}` makes it the last restore everywhere and removes what is set aside")
        break
    return ("no restore finished on every node: `kubectl dr etcd restore status --run RUN` shows one run's steps on "
            "every node; follow the break-glass runbook written by that restore")


def _one_run(nodes: list[NodePod], found: list[NodeState]) -> str:
    runs = {s.run_id for s in found}
    if runs == {None}:
        raise EtcdError("no etcd restore was made on this cluster's control-plane nodes")
    if len(runs) != 1:
        raise EtcdError("the control-plane nodes disagree about the last restore: "
                        + ", ".join(f"{s.node}: {s.run_id or 'none'} ({s.state})" for s in found),
                        hint=_settle(nodes, found))
    return str(next(iter(runs)))


def finalize(session: Session, helper_image: str, run: str | None = None) -> dict[str, Any]:
    """Remove every data dir a finished run set aside, once every node finished the last restore (or `run`)."""
    check_run(run)
    kube, console, dry_run = session.kube, session.console, session.dry
    namespace = pod_namespace(session.namespace_flag)
    found = targets(kube)
    me = Run("etcd restore finalize")
    # Under the restore lease no restore is staging: what a run staged and never handed over is then a leftover.
    lease = None if dry_run else common.take_lease(kube, namespace, me, console)
    nodes = NodePods(kube, namespace, helper_image, console).start(found, me, "etcd-restore-finalize")
    try:
        st = [_read(n, run) for n in nodes]
        run_id = _one_run(nodes, st)
        there = {s.state for s in st} - {"finalized"}
        if not (there <= set(ON_RESTORED) or there <= set(ON_BEFORE)):
            raise EtcdError(f"restore {run_id} did not finish the same way on every node: "
                            f"{', '.join(f'{s.node} ({s.state})' for s in st)}",
                            hint="Only a restore (or rollback) that finished everywhere can be finalized; "
                                 "`kubectl dr etcd restore status` shows each node's steps.")
        removals = [(n, a) for n, s in zip(nodes, st, strict=True) for a in s.set_aside if a.removable]
        plan = {"kind": "EtcdRestoreFinalize", "runID": run_id, "dryRun": dry_run,
                "remove": [{"node": n.target.node, "path": a.path, "what": a.what} for n, a in removals],
                "kept": [{"node": s.node, "path": a.path, "what": a.what}
                         for s in st for a in s.set_aside if not a.removable]}
        if dry_run:
            return plan
        if removals:
            where = ", ".join(sorted({n.target.node for n, _ in removals}))
            console.confirm(f"delete the etcd data dirs set aside on {where} ({len(removals)} in all; no rollback "
                            f"of restore {run_id} after this)")
        for n, a in removals:
            console.say(f"removing {a.path} on node {n.target.node}")
            n.sh(f"rm -rf {shlex.quote(_in_pod(n.target, a.path))}", what="finalizing")
        for n in nodes:
            # The run is settled as this node's last restore, and marked done with.
            n.sh(f"set -e; mkdir -p {HOST_DR}/{run_id}; touch {HOST_DR}/{run_id}/finalized; "
                 f"echo {run_id} > {HOST_DR}/{common.LAST}.tmp; mv {HOST_DR}/{common.LAST}.tmp {HOST_DR}/{common.LAST}",
                 what="finalizing")
        return plan
    finally:
        delete_all(nodes)
        if lease is not None:
            cleanup.current().run(lease)


def _in_pod(t: Target, host_path: str) -> str:
    return nodescript.in_pod(host_path, ((DR_DIR, HOST_DR),
                                         (t.data_dir.rsplit("/", 1)[0] or "/", nodescript.HOST_DATA_PARENT)))


def rollback(session: Session, helper_image: str, run_id: str | None = None, *,
             no_bump: bool = False, node_timeout: int = 300,
             restart_kubelets: bool = False) -> common.Outcome | dict[str, Any]:
    """Put the data from before the restore back with the same self-driving static pods, the other way round.

    The clients saw the restored cluster's revisions, so the old data comes back with its revision moved past
    them, as a restore does: one node's old database (the newest) is restored with --bump-revision into a new
    data dir on every node, and that dir is swapped in. The old data dirs themselves stay until `finalize`.
    `restart_kubelets`: afterwards, as after a restore."""
    check_run(run_id)
    namespace = pod_namespace(session.namespace_flag)
    kube, console, dry_run = session.kube, session.console, session.dry
    found = targets(kube)
    me = Run("etcd restore rollback")
    nodes = NodePods(kube, namespace, helper_image, console).start(found, me, "etcd-restore-rollback")
    try:
        st = [_read(n, run_id) for n in nodes]
        run_id = _one_run(nodes, st)
        bad = [f"{s.node} ({s.state}{'' if s.before_present else ', old data dir gone'})" for s in st
               if s.state != "restore: done" or not s.before_present]
        if bad:
            raise EtcdError(f"restore {run_id} cannot be rolled back: {', '.join(bad)}",
                            hint="A rollback needs a restore that finished on every node and its old data dirs "
                                 "(kept until `finalize`).")
        record = st[0].record or {}
        image = str(record.get("image") or "")
        # A dry run starts no pod: the tool's version then comes from the image tag, as for a restore.
        tool = ((job.image_version(image) or "unknown") if dry_run
                else NodePods(kube, namespace, helper_image, console).tool_version(found[0], image, me))
        bump = job.can_bump(tool, image, no_bump, "rollback")
        p = _plan_from_record(record, found, namespace, helper_image, bump=bump, node_timeout=node_timeout)
        plan = {"kind": "EtcdRestoreRollback", "runID": run_id, "dryRun": dry_run,
                "bumpRevision": job.BUMP if bump else None,
                "nodes": [{"node": n.target.node, "putBack": _swap(s.record or {}, n.target).aside,
                           "as": p.swap(n.target, "rollback").incoming} for n, s in zip(nodes, st, strict=True)]}
        if dry_run:
            return plan
        if not bump:
            console.warn(job.NO_BUMP_RISK)
        console.confirm(f"roll etcd back to the data it had before restore {run_id} on every control-plane node "
                        "(the API server is down meanwhile; changes made since the restore are set aside)")
        _hand_over_all(kube, console, p, nodes, st)
    finally:
        with contextlib.suppress(DrError):
            delete_all(nodes)
    outcome = job.finish(kube, console, run_id, "rollback", found, namespace, helper_image, plan=p)
    if restart_kubelets:
        common.restart_kubelets(kube, namespace, helper_image, me, console, outcome)
    return outcome


def _hand_over_all(kube: Kube, console: Console, p: job.Plan, nodes: list[NodePod], st: list[NodeState]) -> None:
    """What the rollback compares with afterwards, the rebuilt data dirs (when bumped), then the hand-over under
    the restore lease (no restore or rollback stages beside us)."""
    lease = common.take_lease(kube, p.namespace, p.run, console)
    status = etcd_status.ask(kube, console, Discovered(tuple(t.member for t in p.targets)), p.namespace)
    p.revision_before = max((e.revision or 0 for e in status.endpoints), default=None)
    p.counts_before, p.nodes_before = common.count_objects(kube), common.names(kube, "/api/v1/nodes")
    p.pods_before = common.names(kube, "/api/v1/pods")
    steps: list[cleanup.UndoStep | None] = [None] * len(nodes)
    if p.bump:
        steps = list(_stage_rollback(kube, p, nodes, st, console))
    job.hand_over_all(p, nodes, "rollback", console, steps, lease)
    console.say("handed over: the nodes put the data from before the restore back on their own")


def _stage_rollback(kube: Kube, p: job.Plan, nodes: list[NodePod], st: list[NodeState],
                    console: Console) -> list[cleanup.UndoStep]:
    """Every node gets the same database: the newest of the nodes' old ones (all members must start from one
    state), restored with the revision moved past the current one into `DATA.rollback-RUN`."""
    with tempfile.TemporaryDirectory(prefix="kubectl-dr-rollback-") as tmp:
        best: tuple[Path, SnapshotStatus, str] | None = None
        for n, s in zip(nodes, st, strict=True):
            before = _swap(s.record or {}, n.target).aside
            local = Path(tmp) / f"{n.target.node}.db"
            console.say(f"reading the database of {before} on node {n.target.node}")
            n.fetch(_in_pod(n.target, f"{before}/member/snap/db"), local)
            status = verify_snapshot(local, require_trailer=False)
            if best is None or status.revision > best[1].revision:
                best = (local, status, n.target.node)
        assert best is not None
        local, status, source = best
        p.bump_by = max((p.revision_before or 0) - status.revision, 0) + job.BUMP
        console.say(f"every member starts from node {source}'s old database (revision {status.revision}), revision "
            f"moved forward by {p.bump_by:,}")
        stack = cleanup.current()
        steps = []
        for n in nodes:
            steps.append(stack.push(f"remove the staged rollback on node {n.target.node}",
                                    lambda n=n: _unstage_rollback(n, p)))  # type: ignore[misc]
        for n in nodes:
            _restore_copy(p, n, local, status, console)
    return steps


def _restore_copy(p: job.Plan, n: NodePod, local: Path, status: SnapshotStatus, console: Console) -> None:
    t = n.target
    swap = p.swap(t, "rollback")
    run_dir = f"{HOST_DR}/{p.run.id}"
    incoming = shlex.quote(swap.in_pod(swap.incoming))
    n.sh(f"set -e; rm -rf {incoming}; test ! -e {shlex.quote(swap.in_pod(swap.aside))}", what="checking the data dirs")
    n.send_file(local, status.file_size, status.sha256, f"{run_dir}/rollback.db")
    console.say(f"rebuilding the old data into {swap.incoming} on node {t.node}")
    args = ["etcdctl", "snapshot", "restore", f"{nodescript.HOST_DR}/{p.run.id}/rollback.db", "--skip-hash-check",
            f"--name={t.name}", f"--data-dir={swap.in_pod(swap.incoming)}", f"--initial-cluster={p.initial_cluster}",
            f"--initial-cluster-token={p.token}", f"--initial-advertise-peer-urls={','.join(t.peer_urls)}",
            f"--bump-revision={p.bump_by}", "--mark-compacted"]
    parent = t.data_dir.rsplit("/", 1)[0] or "/"
    n.etcdctl(p.image, p.run, "rollback", args,
              [("kubectl-dr", DR_DIR, nodescript.HOST_DR), ("etcd-parent", parent, nodescript.HOST_DATA_PARENT)],
              "etcdctl snapshot restore (rollback)")
    n.sh(f"set -e; test -s {incoming}/member/snap/db; chmod 700 {incoming}; rm -f {run_dir}/rollback.db",
         what="checking the rebuilt dir")


def _unstage_rollback(n: NodePod, p: job.Plan) -> None:
    swap = p.swap(n.target, "rollback")
    n.sh(f"rm -rf {shlex.quote(swap.in_pod(swap.incoming))} {HOST_DR}/{p.run.id}/rollback.db "
         f"{HOST_DR}/{p.run.id}/rollback.db.part", what="removing the staged rollback")


def _plan_from_record(record: dict[str, Any], found: list[Target], namespace: str, helper_image: str, *,
                      bump: bool, node_timeout: int) -> job.Plan:
    run = Run("etcd restore rollback", id=str(record["runID"]))
    by_node = {m["node"]: m for m in record.get("members") or []}
    for t in found:
        if t.node not in by_node or by_node[t.node]["dataDir"] != t.data_dir:
            raise EtcdError(f"node {t.node} is not the member restore {record['runID']} recorded",
                            hint="The control plane changed since the restore; follow the runbook by hand.")
    token = f"kubectl-dr-{run.id.lower()}-rollback-{secrets.token_hex(2)}"
    return job.Plan(run=run, targets=found, snapshot=None, image=str(record.get("image") or ""), tool_version="",
                    bump=bump, token=token, initial_cluster=initial_cluster(found), cluster_version="",
                    revision_before=None, helper_image=helper_image, namespace=namespace, node_timeout=node_timeout)
