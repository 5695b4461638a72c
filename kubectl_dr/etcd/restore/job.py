"""`kubectl dr etcd restore`: preflight and staging through the API, then a self-driving static pod per node.

1. Preflight: the members and their nodes from the static pods, the snapshot verified, its etcd minor
   equal to the cluster's, and the restore tool in the etcd image (`etcdctl version` in a pod of it).
2. Staging, while the cluster still runs: the snapshot copied to every control-plane node (size and SHA-256
   on both sides), then `etcdctl snapshot restore` in a pod of the etcd image into a new data dir beside the
   old one, with the node's member name and peer URL, one --initial-cluster and a new cluster token. A record
   of the run goes to every node (our directory there), not into the cluster: a ConfigMap written now would
   not exist in the restored state.
3. Hand-over: the node script (nodescript.py) goes into each node's manifests directory. From here the nodes
   finish on their own (or roll back on their own); the client waits for the API server and reads their
   status files, then reports and removes what it staged. The old data dirs stay until `finalize`.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup, units
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.etcd import encryption
from kubectl_dr.etcd import status as etcd_status
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.model import MemberInfo
from kubectl_dr.etcd.restore import nodescript
from kubectl_dr.etcd.restore.common import (
    API_WAIT_SECONDS,
    LAST,
    Outcome,
    RestoreFailed,
    check_snapshot,
    compare_with_before,
    count_objects,
    names,
    remove_restored_helpers,
    version_tuple,
    wait_api,
)
from kubectl_dr.etcd.restore.nodepod import NodePod, NodePods, delete_all
from kubectl_dr.etcd.restore.nodescript import HOST_DATA_PARENT, HOST_DR, HOST_KUBERNETES, NodeSwap
from kubectl_dr.etcd.restore.options import RestoreOptions
from kubectl_dr.etcd.restore.source import LocalSnapshot, minor_of
from kubectl_dr.etcd.restore.targets import (
    DR_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    Target,
    apiserver_nodes,
    initial_cluster,
    left_out,
    targets,
)
from kubectl_dr.etcd.topology import Discovered
from kubectl_dr.kube.client import Kube
from kubectl_dr.pauses import pauses
from kubectl_dr.runs import Run
from kubectl_dr.session import Session

BUMP = 1_000_000_000
# etcdctl got `snapshot restore --bump-revision/--mark-compacted` in 3.5.10 and lost `snapshot restore` in 3.6.
BUMP_SINCE = (3, 5, 10)
NO_BUMP_RISK = (
    "Without --bump-revision the restored revision is lower than what every watching client (kubelets, "
    "controllers, operators) has already seen: their informers do not notice the change, miss events and keep a "
    "stale cache until they are restarted (kubernetes#107457, #118501).")


@dataclass
class Plan:
    run: Run
    targets: list[Target]
    snapshot: LocalSnapshot | None  # None when a rollback replays a recorded run
    image: str  # the etcd image that runs the restore
    tool_version: str
    bump: bool
    token: str
    initial_cluster: str
    cluster_version: str
    revision_before: int | None
    helper_image: str
    namespace: str
    counts_before: dict[str, int] = field(default_factory=dict)
    nodes_before: list[str] = field(default_factory=list)
    pods_before: list[str] = field(default_factory=list)
    node_timeout: int = 300  # how long each node waits for the new cluster to form before it rolls back
    bump_by: int = BUMP  # a rollback moves the revision past the current one by BUMP

    def swap(self, target: Target, mode: str) -> NodeSwap:
        restored = f"{target.data_dir}.restored-{self.run.id}"
        before = f"{target.data_dir}.before-{self.run.id}"
        if mode == "restore":
            incoming, aside = restored, before
        elif self.bump:  # a rollback that moves the revision forward runs on a copy of the old data, rebuilt
            incoming, aside = rollback_dir(target.data_dir, self.run.id), restored
        else:
            incoming, aside = before, restored
        return NodeSwap(run_id=self.run.id, mode=mode, node=target.node, kubernetes_dir=KUBERNETES_DIR,
                        manifests_dir=MANIFESTS_DIR, data_dir=target.data_dir, incoming=incoming, aside=aside,
                        dr_dir=DR_DIR, health_url=f"{target.metrics_url}/health?serializable=false",
                        metrics_url=f"{target.metrics_url}/metrics", peers=len(self.targets) - 1,
                        readyz_url=target.readyz_url, health_timeout=self.node_timeout,
                        # --node-timeout bounds every wait on the node; stopping a loaded API server gets a minute.
                        stop_timeout=max(self.node_timeout, 60), api_timeout=self.node_timeout,
                        go_timeout=self.node_timeout + 60)

    def restore_args(self, target: Target) -> list[str]:
        swap = self.swap(target, "restore")
        args = ["etcdctl", "snapshot", "restore", f"{HOST_DR}/{self.run.id}/snapshot.db", f"--name={target.name}",
                f"--data-dir={swap.in_pod(swap.incoming)}", f"--initial-cluster={self.initial_cluster}",
                f"--initial-cluster-token={self.token}",
                f"--initial-advertise-peer-urls={','.join(target.peer_urls)}"]
        if self.bump:
            args += [f"--bump-revision={BUMP}", "--mark-compacted"]
        return args

    def record(self) -> dict[str, Any]:
        assert self.snapshot is not None
        return {
            "kind": "EtcdRestoreRecord", "runID": self.run.id, "run": self.run.describe(),
            "snapshot": {"backupID": self.snapshot.backup_id, "path": str(self.snapshot.path),
                         "sha256": self.snapshot.status.sha256, "revision": self.snapshot.status.revision,
                         "etcdVersion": self.snapshot.version},
            "image": self.image, "bumpRevision": BUMP if self.bump else None, "clusterToken": self.token,
            "initialCluster": self.initial_cluster, "revisionBefore": self.revision_before,
            "members": [{**t.to_dict(), "before": self.swap(t, "restore").aside,
                         "restored": self.swap(t, "restore").incoming} for t in self.targets],
            "countsBefore": self.counts_before, "nodesBefore": self.nodes_before,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdRestorePlan", **self.record(),
                "steps": [s for t in self.targets for s in self.node_steps(t)]}

    def node_steps(self, t: Target) -> list[str]:
        swap = self.swap(t, "restore")
        return [f"{t.node}: copy the snapshot to {DR_DIR}/{self.run.id}/snapshot.db (size and SHA-256 checked)",
                f"{t.node}: {' '.join(self.restore_args(t))} (pod of {self.image})",
                f"{t.node}: static pod {nodescript.MANIFEST_FILE}: park the control-plane manifests in "
                f"{swap.parked_dir}, stop etcd, {t.data_dir} → {swap.aside}, {swap.incoming} → {t.data_dir}, etcd "
                f"back, {self._wait_words()}, then the rest back"]

    def _wait_words(self) -> str:
        """A member of one has no peers to wait for: only its own health."""
        peers = len(self.targets) - 1
        if peers == 0:
            return "wait until it is healthy (the only member: no peers to wait for)"
        return f"wait for a quorum and {'its peer' if peers == 1 else f'all {peers} peers'}"

    def summary(self) -> str:
        assert self.snapshot is not None
        lines = [f"(dry run) would restore etcd on {units.count(len(self.targets), 'control-plane node')} from "
                 f"{self.snapshot.describe()} (revision {self.snapshot.status.revision}, etcd "
                 f"{self.snapshot.version or 'unknown'}), with {self.image} ({self.tool_version}), "
                 + (f"revision bumped by {BUMP:,}" if self.bump else "WITHOUT a revision bump")]
        lines += [f"  {s}" for t in self.targets for s in self.node_steps(t)]
        return "\n".join(lines) + "\n"


def rollback_dir(data_dir: str, run_id: str) -> str:
    """Where a rollback that bumps the revision rebuilds the data from before a restore."""
    return f"{data_dir}.rollback-{run_id}"


def can_bump(tool_version: str, image: str, no_bump: bool, what: str = "restore") -> bool:
    """Whether the etcdctl of `image` bumps the revision; refused (with the reason) when it cannot and the user did
    not accept that with --no-bump-revision."""
    has_bump = BUMP_SINCE <= version_tuple(tool_version) < (3, 6)
    if not has_bump and not no_bump:
        raise EtcdError(f"no {what} tool with --bump-revision: {image} has etcdctl {tool_version} (the bump needs "
                        "etcdctl ≥ 3.5.10)",
                        hint=f"{NO_BUMP_RISK} To {what} anyway and restart those clients yourself, pass "
                             "--no-bump-revision" + ("; or give --etcd-image an etcd image of the same minor whose "
                                                     "etcdctl has the bump." if what == "restore" else "."))
    return has_bump and not no_bump


# ------------------------------------------------------------------------------------------- preflight
def image_version(image: str) -> str | None:
    """registry.k8s.io/etcd:3.5.16-0 → 3.5.16 (kubeadm tags its etcd images VERSION-N)."""
    last = image.rsplit("/", 1)[-1]
    match = re.match(r"v?(\d+\.\d+\.\d+)", last.rsplit(":", 1)[-1]) if ":" in last else None
    return match.group(1) if match else None


@dataclass(frozen=True)
class Preflight:
    """What preflight read from the cluster: the plan is decided from this and the options alone."""

    targets: list[Target]
    versions: list[str]  # the members' etcd versions, one major.minor
    tool_version: str  # etcdctl's version in the image that restores
    image: str
    revision: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)


def plan(session: Session, snapshot: LocalSnapshot, opts: RestoreOptions) -> Plan:
    """Everything checked before anything changes. A dry run starts no pod: the versions then come from the
    image tags (kubeadm's registry.k8s.io/etcd:X.Y.Z-N), and the plan says so."""
    kube, console, run = session.kube, session.console, session.run
    found = targets(kube)
    console.say(f"etcd members: {', '.join(f'{t.name} on {t.node}' for t in found)}")
    _refuse_left_out(found, apiserver_nodes(kube), None)
    images = sorted({t.member.image for t in found})
    image = opts.etcd_image or images[0]
    if opts.client_dry_run:
        tagged = [v for v in (image_version(t.member.image) for t in found) if v]
        tool = image_version(image)
        if not tagged or tool is None:
            raise EtcdError("a client dry run reads the etcd versions from the image tags, and these have none: "
                            f"{', '.join(images)}", hint="Run without --dry-run to ask the members.")
        return _decide(Preflight(found, tagged, tool, image), snapshot, opts, run)
    status = etcd_status.ask(kube, console, Discovered(tuple(t.member for t in found)), opts.namespace)
    versions = sorted({e.version for e in status.endpoints if e.version})
    if not versions:
        raise EtcdError("no etcd member answered: cannot tell the cluster's etcd version",
                        hint="kubectl dr etcd restore reads the cluster's version from its running members. "
                             "With the API down, follow the break-glass runbook of an earlier restore.")
    if len({minor_of(v) for v in versions}) != 1:
        raise EtcdError(f"the members run different etcd versions ({', '.join(versions)}): finish the upgrade "
                        "first")
    _refuse_left_out(found, [], status.members)
    unhealthy = [e.endpoint for e in status.endpoints if not e.healthy]
    if unhealthy:
        console.warn(f"members not healthy now: {', '.join(unhealthy)} (the restore replaces their data too)")
    check_snapshot(snapshot, versions[0])
    # Secrets the restored data holds must be readable with the keys the API servers have now.
    for warning in encryption.preflight(kube, snapshot.details, namespace=opts.namespace, run=run, console=console,
                                        helper_image=opts.helper_image):
        console.warn(warning)
    tool = NodePods(kube, opts.namespace, opts.helper_image, console).tool_version(found[0], image, run)
    return _decide(Preflight(found, versions, tool, image,
                             revision=max((e.revision or 0 for e in status.endpoints), default=None),
                             counts=count_objects(kube), nodes=names(kube, "/api/v1/nodes"),
                             pods=names(kube, "/api/v1/pods")),
                   snapshot, opts, run)


def _refuse_left_out(found: list[Target], api_nodes: list[str], members: list[MemberInfo] | None) -> None:
    missing = left_out(found, api_nodes, members)
    if missing:
        # kubeadm names each member after its node: that is the node to look at.
        nodes = sorted(set(api_nodes) - {t.node for t in found}) or sorted(
            m.name for m in members or [] if m.name and m.name not in {t.name for t in found})
        node = nodes[0] if nodes else "NODE"
        raise EtcdError(f"the restore would leave out part of the control plane: {'; '.join(missing)}",
                        hint=f"Every member must be restored at once. Start its etcd static pod again ({MANIFESTS_DIR}"
                             f"/etcd.yaml on node {node}) and wait until `kubectl dr etcd status` shows it healthy, "
                             f"or replace the member first: `kubectl dr etcd member replace {node}`.")


def _decide(found: Preflight, snapshot: LocalSnapshot, opts: RestoreOptions, run: Run) -> Plan:
    cluster_version = found.versions[0]
    check_snapshot(snapshot, cluster_version)
    tool, image = found.tool_version, found.image
    if minor_of(tool) != minor_of(cluster_version):
        raise EtcdError(f"{image} has etcdctl {tool}, the cluster runs etcd {cluster_version}",
                        hint="--etcd-image must be an etcd image of the cluster's major.minor.")
    if version_tuple(tool) >= (3, 6):
        raise EtcdError(f"etcdctl {tool} no longer restores snapshots (etcd 3.6 moved it to etcdutl, which "
                        "the kubeadm etcd images do not ship)",
                        hint="kubectl dr restores with etcdctl of etcd 3.5 or 3.4 only; for etcd 3.6 follow the "
                             "break-glass runbook (etcdutl on the nodes).")
    return Plan(run=run, targets=found.targets, snapshot=snapshot, image=image, tool_version=tool,
                bump=can_bump(tool, image, opts.no_bump), token=f"kubectl-dr-{run.id.lower()}-{secrets.token_hex(2)}",
                initial_cluster=initial_cluster(found.targets), cluster_version=cluster_version,
                revision_before=found.revision, helper_image=opts.helper_image, namespace=opts.namespace,
                counts_before=found.counts, nodes_before=found.nodes, pods_before=found.pods,
                node_timeout=opts.node_timeout)


# --------------------------------------------------------------------------------------------- staging
def _stage(p: Plan, node: NodePod, console: Console) -> None:
    assert p.snapshot is not None
    t = node.target
    swap = p.swap(t, "restore")
    run_dir = f"{HOST_DR}/{p.run.id}"
    # What runs killed before their hand-over left (we hold the restore lease, so no live run is staging): their
    # snapshot copies and restored dirs. Runs that were handed over keep everything for status and rollback.
    restored_prefix = shlex.quote(swap.in_pod(t.data_dir) + ".restored-")
    # Runs that rolled back everywhere are past use as well (normally the client already removed their dirs).
    node.sh(f"for d in {HOST_DR}/*/; do r=$(basename \"$d\"); [ -e \"$d/record.json\" ] || continue; "
            f"if [ -e \"$d/status-restore\" ]; then tail -n 1 \"$d/status-restore\" | "
            f"grep -qE '^[0-9]+ (rolled-back|failed)( |$)' || continue; else echo aborted > \"$d/aborted\"; fi; "
            f"rm -rf \"$d/snapshot.db\" \"$d/snapshot.db.part\" {restored_prefix}\"$r\"; done; true",
            what="removing what interrupted runs staged")
    earlier = node.sh(f"ls -d {shlex.quote(swap.in_pod(t.data_dir))}.before-* 2>/dev/null; true",
                      what="looking for earlier restores").split()
    if earlier:
        console.warn(f"node {t.node} still keeps the old data dir of an earlier restore "
            f"({', '.join(e.rsplit('/', 1)[-1] for e in earlier)}): `kubectl dr etcd restore finalize` removes it")
    node.sh(f"set -e; mkdir -p {run_dir}; test ! -e {shlex.quote(swap.in_pod(swap.incoming))}; "
            f"test ! -e {shlex.quote(swap.in_pod(swap.aside))}; test -d {shlex.quote(swap.in_pod(t.data_dir))}",
            what="checking the data dirs")
    # The record only: LAST keeps naming the previous restore until this one is handed over (_hand_over), so an
    # attempt that ends here leaves the earlier restore's rollback and finalize as they were.
    record = json.dumps({**p.record(), "node": t.node}, indent=1).encode()
    node.sh(f"cat > {run_dir}/record.json", stdin=record, what="writing the run record")
    console.say(f"copying the snapshot ({units.size(p.snapshot.status.file_size)}) to node {t.node}")
    node.send_file(p.snapshot.path, p.snapshot.status.file_size, p.snapshot.status.sha256, f"{run_dir}/snapshot.db")
    console.say(f"restoring the snapshot into {swap.incoming} on node {t.node}")
    parent = t.data_dir.rsplit("/", 1)[0] or "/"
    node.etcdctl(p.image, p.run, "restore", p.restore_args(t),
                 [("kubectl-dr", DR_DIR, HOST_DR), ("etcd-parent", parent, HOST_DATA_PARENT)],
                 "etcdctl snapshot restore")
    incoming = shlex.quote(swap.in_pod(swap.incoming))
    node.sh(f"set -e; test -s {incoming}/member/snap/db; chmod 700 {incoming}", what="checking the restored dir")


def _unstage(node: NodePod, p: Plan) -> None:
    swap = p.swap(node.target, "restore")
    node.sh(f"rm -rf {shlex.quote(swap.in_pod(swap.incoming))} {HOST_DR}/{p.run.id}/snapshot.db "
            f"{HOST_DR}/{p.run.id}/snapshot.db.part; mkdir -p {HOST_DR}/{p.run.id}; "
            f"echo aborted > {HOST_DR}/{p.run.id}/aborted",
            what="removing the staged restore")


def _hand_over(node: NodePod, p: Plan, mode: str) -> None:
    import yaml

    manifest = yaml.safe_dump(nodescript.static_pod(p.swap(node.target, mode), p.helper_image)).encode()
    dest = f"{HOST_KUBERNETES}/manifests/{nodescript.MANIFEST_FILE}"
    # Written beside and renamed: the kubelet never reads half a file. A dot file is not a pod.
    node.sh(f"set -e; test ! -e {dest}; cat > {HOST_KUBERNETES}/manifests/.kubectl-dr.tmp && "
            f"mv {HOST_KUBERNETES}/manifests/.kubectl-dr.tmp {dest}", stdin=manifest, what="handing over")


def _go(node: NodePod, p: Plan, mode: str) -> None:
    """LAST moves with the go, in one command: from here the node's data dirs change, so this run is its last
    restore; not a moment before (a run that ended earlier changed nothing)."""
    swap = p.swap(node.target, mode)
    node.sh(f"set -e; echo {p.run.id} > {HOST_DR}/{LAST}.tmp; mv {HOST_DR}/{LAST}.tmp {HOST_DR}/{LAST}; "
            f"touch {shlex.quote(swap.in_pod(swap.go_file))}", what="giving the go")


def _call_off(nodes: list[NodePod], p: Plan, mode: str, reason: str) -> None:
    """Tell every node's script, still waiting for the go, to end without changing anything, and why."""
    for node in nodes:
        swap = p.swap(node.target, mode)
        with contextlib.suppress(DrError):
            node.sh(f"cat > {shlex.quote(swap.in_pod(swap.abort_file))}", stdin=reason.encode(),
                    what="calling the run off")


def await_ready(nodes: list[NodePod], p: Plan, mode: str, console: Console) -> str | None:
    """Until every node's script passed its own checks (None), or why the run must be called off: a node that
    failed them, or one not ready within --node-timeout (its static pod did not start)."""
    deadline = time.monotonic() + p.node_timeout
    told = 0.0
    pause = pauses(1.0)  # a status file read per node; a node's static pod is ready within a second, as a rule
    while True:
        statuses = read_statuses(nodes, p.run.id, mode)
        ended = {n: rows[-1] for n, rows in statuses.items() if rows and rows[-1][1] in nodescript.TERMINAL}
        if ended:
            return "; ".join(f"node {n} {step}: {detail}" for n, (_, step, detail) in ended.items())
        waiting = [n for n, rows in statuses.items() if not any(step == "ready" for _, step, _ in rows)]
        if not waiting:
            return None
        if time.monotonic() > deadline:
            return "; ".join(f"node {n} not ready within {p.node_timeout}s of the hand-over ("
                             + (f"last step {statuses[n][-1][1]})" if statuses[n] else "its static pod did not start)")
                             for n in waiting)
        if time.monotonic() - told > 10:
            told = time.monotonic()
            console.say(f"waiting for node(s) {', '.join(waiting)} to be ready")
        time.sleep(next(pause))


def hand_over_all(p: Plan, nodes: list[NodePod], mode: str, console: Console,
                  unstage: list[cleanup.UndoStep | None], lease: cleanup.UndoStep) -> None:
    """The manifests on every node; once every node's script is ready, the go on each (the point of no return).
    A node that fails before that ends the run everywhere at once, nothing changed: RestoreFailed with its
    reason. Until the go an interruption calls the run off the same way."""
    stack = cleanup.current()
    call_off = stack.push("call the run off on every node",
                          lambda: _call_off(nodes, p, mode, "kubectl dr was interrupted before the go"))
    for node in nodes:
        _hand_over(node, p, mode)
    reason = await_ready(nodes, p, mode, console)
    if reason is not None:
        console.say(f"calling the {mode} off on every node: {reason}")
        stack.discard(call_off)
        _call_off(nodes, p, mode, reason)
        statuses = wait_nodes(nodes, p.run.id, mode, console, timeout=p.node_timeout + 30.0, never_started=10.0)
        for node in nodes:
            rows = statuses[node.target.node]
            if not rows or rows[-1][1] not in nodescript.TERMINAL:  # never started: its manifest goes
                node.sh(f"rm -f {HOST_KUBERNETES}/manifests/{nodescript.MANIFEST_FILE}", what="removing the manifest")
        for step in unstage:
            if step is not None:
                stack.run(step)
        raise RestoreFailed(Outcome(mode, p.run.id, statuses))
    # The API servers stop from here on: the lease goes first.
    stack.run(lease)
    for node, step in zip(nodes, unstage, strict=True):
        if step is not None:  # a node that has the go decides alone: its staged dir is never removed under it
            stack.discard(step)
        _go(node, p, mode)
    stack.discard(call_off)


# ---------------------------------------------------------------------------------------------- after
def read_statuses(nodes: list[NodePod], run_id: str, mode: str) -> dict[str, list[tuple[int, str, str]]]:
    out = {}
    for n in nodes:
        text = n.sh(f"cat {HOST_DR}/{run_id}/status-{mode} 2>/dev/null; true", what="reading the status")
        out[n.target.node] = nodescript.parse_status(text)
    return out


def wait_nodes(nodes: list[NodePod], run_id: str, mode: str, console: Console,
               timeout: float = 900.0, never_started: float = 120.0) -> dict[str, list[tuple[int, str, str]]]:
    """Until every node's status is terminal. A node whose script never wrote a line (its pod did not start:
    image, kubelet) is given up on `never_started` seconds after the others are done."""
    deadline = time.monotonic() + timeout
    others_done: float | None = None
    told = 0.0
    # A status file read per node: each node's last line is reported within a second, and sooner when the nodes
    # are done by the time the API answers (the usual case after a restore).
    pause = pauses(1.0)
    while True:
        statuses = read_statuses(nodes, run_id, mode)
        pending = [n for n, rows in statuses.items() if not rows or rows[-1][1] not in nodescript.TERMINAL]
        silent = [n for n in pending if not statuses[n]]
        if pending and pending == silent:
            others_done = others_done or time.monotonic()
        if not pending or time.monotonic() > deadline or (
                others_done is not None and time.monotonic() - others_done > never_started):
            return statuses
        if time.monotonic() - told >= 3:  # said as often as before; read more often, so known sooner
            told = time.monotonic()
            console.say(f"waiting for node(s) {', '.join(pending)} to finish")
        time.sleep(next(pause))


def run(session: Session, p: Plan, runbook: str, lease: cleanup.UndoStep, *,
        rerun: str = "the same `kubectl dr etcd restore`") -> Outcome:
    """Stage on every node, hand over, wait, report, clean up. Raises if the nodes rolled back. `lease`: the
    release of the restore lease the caller holds (common.take_lease), run before the API servers stop; the
    caller wrote what must exist before anything changes (the runbook). `rerun`: the command that starts this
    restore afresh, said when an interruption calls it off."""
    kube, console = session.kube, session.console
    stack = cleanup.current()
    # Pushed first, so said last on Ctrl-C or SIGTERM: after the cleanup that undid the staging. Gone at the go.
    note = stack.push("say how to go on", lambda: console.say(
        f"the restore was called off before any node began: etcd was not changed; `{rerun}` starts it again"))
    # Interrupted or failed before the hand-over, the cleanup stack undoes it newest first: the restore pod, the
    # staged files on each node (through its node pod), the node pods, the lease.
    nodes = NodePods(kube, p.namespace, p.helper_image, console).start(p.targets, p.run, "etcd-restore")
    steps = []
    for node in nodes:
        steps.append(stack.push(f"remove the staged restore on node {node.target.node}",
                                lambda node=node: _unstage(node, p)))  # type: ignore[misc]
    for node in nodes:
        _stage(p, node, console)
    # The point of no return for the client is each node's go: from there the node decides. A node interrupted
    # before its go is called off and unstaged; the ones that had it then miss a peer and go back.
    try:
        hand_over_all(p, nodes, "restore", console, list(steps), lease)
    finally:
        stack.discard(note)  # a refusal (DrError) says why itself; past the go the nodes decide
    for node in nodes:
        if node.pod.step is not None:  # the API server is going away: no deletion to wait for at exit
            stack.discard(node.pod.step)
            node.pod.step = None
    console.say("handed over: every control-plane node now stops its API server and etcd, swaps the data dir and "
        "starts again on its own; Ctrl-C no longer stops it (follow with `kubectl dr etcd restore status`)")
    for node in nodes:
        # Pods made after the snapshot: the restored state does not have them and their kubelet stops them;
        # asking now spares the wait where the API server still answers.
        with contextlib.suppress(DrError):
            node.pod.request_delete()
    return finish(kube, console, p.run.id, "restore", p.targets, p.namespace, p.helper_image, plan=p, runbook=runbook)


def _discard_restored(node: NodePod, run_id: str, console: Console) -> None:
    restored = f"{node.target.data_dir}.restored-{run_id}"
    swap = NodeSwap(run_id=run_id, mode="restore", node=node.target.node, kubernetes_dir=KUBERNETES_DIR,
                    manifests_dir=MANIFESTS_DIR, data_dir=node.target.data_dir, incoming=restored, aside="",
                    dr_dir=DR_DIR, health_url="", metrics_url="", peers=0, readyz_url="")
    try:
        node.sh(f"rm -rf {shlex.quote(swap.in_pod(restored))} {HOST_DR}/{run_id}/snapshot.db; "
                f"rmdir {HOST_KUBERNETES}/kubectl-dr/{run_id}-restore {HOST_KUBERNETES}/kubectl-dr 2>/dev/null; true",
                what="removing the restored data dir")
    except DrError as exc:
        console.warn(f"cannot remove {restored} on node {node.target.node}: {exc.message}")


def finish(kube: Kube, console: Console, run_id: str, mode: str, found: list[Target], namespace: str,
           helper_image: str, *, plan: Plan | None = None, runbook: str | None = None) -> Outcome:
    """After the hand-over: the API back, every node's status read, what was staged removed, the outcome compared
    with what was there before."""
    # Bounded by --node-timeout: each node stops its control plane, forms the cluster and starts the API server
    # within its own waits, each at most that long (stopping at least a minute).
    wait_api(kube, console, API_WAIT_SECONDS if plan is None else
             float(max(plan.node_timeout, 60) + 2 * plan.node_timeout + 120))
    console.say("the API server answers; reading every node's status")
    reader = Run(f"etcd restore {mode} (status)")
    nodes = NodePods(kube, namespace, helper_image, console).start(found, reader, "etcd-restore-status")
    try:
        # With the API back, a node is at most its API wait (--node-timeout) from its last line.
        statuses = wait_nodes(nodes, run_id, mode, console, timeout=900.0 if plan is None else plan.node_timeout + 60.0)
        outcome = Outcome(mode, run_id, statuses, runbook=runbook)
        if outcome.ok:
            # Our staging: the snapshot copies and the emptied parking directories. The data dirs set aside stay.
            for n in nodes:
                n.sh(f"rm -f {HOST_DR}/{run_id}/snapshot.db; rmdir {HOST_KUBERNETES}/kubectl-dr/{run_id}-{mode} "
                     f"{HOST_KUBERNETES}/kubectl-dr 2>/dev/null; true", what="removing the staged snapshot")
        elif mode == "restore" and all(rows and rows[-1][1] in (nodescript.ROLLED_BACK, nodescript.FAILED)
                                       for rows in statuses.values()):
            # Every node is back on its old data: the restored dirs and snapshot copies are of no use any more
            # (a new restore stages afresh), and each is as large as the database. The status files stay.
            for n in nodes:
                _discard_restored(n, run_id, console)
    finally:
        delete_all(nodes)
    remove_restored_helpers(kube, namespace, console)
    try:
        st = etcd_status.ask(kube, console, Discovered(tuple(t.member for t in found)), namespace)
        outcome.revision_after = max((e.revision or 0 for e in st.endpoints), default=None)
        outcome.members = [f"{m.name} ({'leader' if m.is_leader else 'follower'})" for m in st.members]
    except DrError as exc:
        console.warn(f"cannot read the etcd status after the {mode}: {exc.message}")
    if plan is not None:
        outcome.revision_before = plan.revision_before
        compare_with_before(kube, outcome, plan.counts_before, plan.nodes_before, plan.pods_before)
    if not outcome.ok:
        raise RestoreFailed(outcome)
    return outcome

