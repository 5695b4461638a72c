"""`kubectl dr etcd member replace NODE`: a stacked member whose data is lost, or whose node was rebuilt,
removed from the cluster and added back empty, as etcd's runtime-reconfiguration guide does it.

The steps, each written to a journal on the node before the next one starts (so a run that is
interrupted, or a laptop that dies, can be resumed by running the command again):

  stopped            the member's static pod manifest moved out of the kubelet's manifests directory
                     into ours (the original, byte for byte): the kubelet stops the member
  removed            `etcdctl member remove OLD_ID`, asked from a healthy member's node
  moved-aside        the old data dir renamed beside itself (kept, never deleted), a new one made 0700
  added              `etcdctl member add NAME --peer-urls … --learner` (3.4 and later have learners)
  started            the manifest back in place with `--initial-cluster-state=existing` and the current
                     `--initial-cluster`: the member starts empty and catches up from the leader
  promoted           `etcdctl member promote NEW_ID` once etcd says the learner is in sync
  manifest-restored  the original manifest put back (etcd ignores the initial-cluster flags once its data
                     dir exists): what kubeadm wrote is what stays on the node
  done

Before the first step: quorum is counted on the other members (the target is counted as lost), and a
replacement that would lose it is refused. Until `removed` the run can be undone (`--undo` moves the
manifest back); after it the old member ID is gone from the cluster and only going forward makes sense.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml

from kubectl_dr import cleanup, units
from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.etcd import etcdctl, membership, podrun, podspec
from kubectl_dr.etcd.errors import EtcdError, MemberError, all_members_failed
from kubectl_dr.etcd.model import MemberInfo
from kubectl_dr.etcd.topology import (
    ETCD_NAMESPACE,
    Discovered,
    StaticMember,
    parse_flags,
    pod_namespace,
    resolve,
)
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.nodes import HostMount, HostPod, start_host_pod, staticpods
from kubectl_dr.pauses import pauses
from kubectl_dr.runs import Heartbeat, Lease, LeaseHeld, Run, lease_name
from kubectl_dr.runs.run import RUN_ID_LABEL
from kubectl_dr.session import Session
from kubectl_dr.units import count

KUBERNETES_DIR = "/etc/kubernetes"
DEFAULT_MANIFESTS_DIR = "/etc/kubernetes/manifests"
JOURNAL_DIR = "/etc/kubernetes/kubectl-dr/etcd-member-replace"
JOURNAL = f"{JOURNAL_DIR}/journal.json"
PARKED = f"{JOURNAL_DIR}/etcd.yaml"
MANIFEST = "etcd.yaml"
STEPS = ("stopped", "removed", "moved-aside", "added", "started", "promoted", "manifest-restored", "done")
UNDOABLE = ("planned", "stopped")
# The longest pause between two looks (the first ones come sooner: kubectl_dr.pauses).
POLL = 1.0  # between looks that run etcdctl in a pod
API_POLL = 0.5  # between looks that are one GET of the API (the etcd mirror pod): the step goes on that much sooner
NOT_IN_SYNC = "can only promote a learner member which is in sync with leader"
PURPOSE = "etcd-member-replace"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Journal:
    """What the run did so far, on the node; rewritten (atomically) after every step."""

    data: dict[str, Any]

    @property
    def step(self) -> str:
        return str(self.data.get("step") or "planned")

    def reached(self, step: str) -> bool:
        order = ("planned", *STEPS)
        return order.index(self.step) >= order.index(step)

    def mark(self, pod: HostPod, step: str, **fields: Any) -> None:
        self.data.update(fields)
        self.data["step"] = step
        self.data.setdefault("history", []).append({"step": step, "at": _now()})
        pod.write(JOURNAL, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)


@dataclass
class ReplaceResult:
    node: str
    name: str
    old_id: str | None
    new_id: str | None
    learner: bool
    data_dir: str
    aside: str | None
    resumed: bool
    seconds: float
    members: list[MemberInfo] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdMemberReplacement", "node": self.node, "member": self.name, "oldID": self.old_id,
                "newID": self.new_id, "addedAsLearner": self.learner, "dataDir": self.data_dir,
                "oldDataDir": self.aside, "resumed": self.resumed, "seconds": round(self.seconds, 3),
                "members": [m.to_dict() for m in self.members], "steps": self.steps}


@dataclass
class ReplacePlan:
    node: str
    name: str
    data_dir: str | None
    aside: str | None
    via: list[str]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdMemberReplacePlan", "dryRun": "client", "node": self.node, "member": self.name,
                "dataDir": self.data_dir, "oldDataDir": self.aside, "askVia": self.via, "notes": self.notes}

    def summary(self) -> str:
        lines = [f"(dry run) would replace the etcd member {self.name} on node {self.node}:",
                 f"  1. count quorum on the other members ({', '.join(self.via)}) and refuse if it would be lost",
                 f"  2. move {DEFAULT_MANIFESTS_DIR}/{MANIFEST} aside into {JOURNAL_DIR} (the member stops)",
                 f"  3. etcdctl member remove (from a pod on {self.via[0] if self.via else '?'})",
                 f"  4. keep its data dir {self.data_dir} as {self.aside}, start from an empty one",
                 "  5. etcdctl member add --learner, start it with --initial-cluster-state=existing",
                 "  6. promote it once in sync, put the original manifest back, wait until every member is healthy"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- etcdctl
class Etcdctl:
    """etcdctl in a pod on a healthy member's node, with that member's client certificate."""

    def __init__(self, kube: Kube, pod: pods.HelperPod, member: StaticMember) -> None:
        self.kube, self.pod, self.member = kube, pod, member

    def __call__(self, endpoints: list[str], *args: str) -> tuple[bool, bytes, str]:
        result, out = podrun.run(self.kube, self.pod, podspec.STATUS_CONTAINER,
                                 etcdctl.command(self.member, endpoints, *args))
        if result.status is None:
            result.check(f"etcdctl {' '.join(args[:2])} on node {self.member.node}")
        return result.ok, out, result.stderr.decode(errors="replace").strip()

    def must(self, endpoints: list[str], *args: str) -> bytes:
        ok, out, err = self(endpoints, *args)
        if not ok:
            raise EtcdError(f"etcdctl {' '.join(args)} failed (asked from node {self.member.node}): {err[-800:]}")
        return out

    def members(self) -> list[MemberInfo]:
        return etcdctl.parse_member_list(self.must([self.member.client_url], "member", "list", "-w", "json"))[1]

    def healthy(self, members: list[MemberInfo]) -> set[str]:
        """IDs of the voting members whose endpoints answer a health check (a quorum read)."""
        urls = {u: m.id for m in members if not m.is_learner for u in m.client_urls}
        if not urls:
            return set()
        _, out, _ = self(list(urls), "endpoint", "health", "-w", "json")
        try:
            health = etcdctl.parse_endpoint_health(out)
        except ValueError:
            return set()
        return {urls[u] for u, h in health.items() if u in urls and h.get("health")}

    def status(self, url: str) -> dict[str, Any] | None:
        ok, out, _ = self([url], "endpoint", "status", "-w", "json")
        if not ok:
            return None
        try:
            rows = json.loads(out or b"[]")
        except ValueError:
            return None
        return dict(rows[0].get("Status") or {}) if rows else None


# ------------------------------------------------------------------------------------------- the job
@dataclass
class Replacement:
    session: Session
    topology: Discovered
    node: str
    namespace: str
    helper_image: str
    manifests_dir: str = DEFAULT_MANIFESTS_DIR
    timeout: float = 600.0
    heartbeat: Heartbeat = field(init=False)
    _steps: list[cleanup.UndoStep] = field(default_factory=list)
    _pods: list[pods.HelperPod] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.heartbeat = Heartbeat(self.console.warn)

    @classmethod
    def of(cls, session: Session, node: str, helper_image: str, *, manifests_dir: str = DEFAULT_MANIFESTS_DIR,
           timeout: float = 600.0) -> Replacement:
        """`kubectl dr etcd member replace NODE`: the members from the static pods, our pods in kube-system (or -n)."""
        # resolve, not discover: an API that does not answer gets the hint to ask the members directly.
        members = resolve(lambda: session.kube, None, None, None, None)
        assert isinstance(members, Discovered)
        return cls(session, members, node, pod_namespace(session.namespace_flag), helper_image,
                   manifests_dir=manifests_dir, timeout=timeout)

    @property
    def kube(self) -> Kube:
        return self.session.kube

    @property
    def console(self) -> Console:
        return self.session.console

    @property
    def run(self) -> Run:
        return self.session.run

    def rerun(self, *, undo: bool = False) -> str:
        """The command that goes on from the journal (or, with `undo`, puts the member back): the user's own."""
        return self.session.command_line(drop=["--undo", "--dry-run"], add=["--undo"] if undo else [],
                                         default=["etcd", "member", "replace", self.node, "--yes"])

    @property
    def manifest_path(self) -> str:
        return posixpath.join(self.manifests_dir, MANIFEST)

    # --- the pods ------------------------------------------------------------------------------------
    def _etcdctl(self, avoid: str) -> Etcdctl:
        """A status pod on the first other member that works (Ready members first)."""
        failures: list[MemberError] = []
        for member in self.topology.candidates():
            if member.node == avoid:
                continue
            try:
                doc = podspec.status_pod(member, self.namespace, self.run)
                doc["metadata"]["labels"][pods.LABEL_PURPOSE] = PURPOSE
                pod = podrun.start(self.kube, doc, member, "etcd member replace", console=self.console)
                self._pods.append(pod)
                return Etcdctl(self.kube, pod, member)
            except MemberError as exc:
                if exc.fatal:
                    raise
                failures.append(exc)
                self.console.warn(f"cannot ask etcd from node {member.node}: {exc.message}")
        if not failures:
            raise EtcdError(f"no etcd member runs on a node other than {avoid}: a single-member etcd cannot be "
                            "repaired by replacing its member", hint="Restore it from a snapshot instead.")
        raise all_members_failed("asking the other etcd members", failures)

    def _host(self, mounts: list[HostMount]) -> HostPod:
        pod = start_host_pod(self.kube, node=self.node, namespace=self.namespace, mounts=mounts,
                             image=self.helper_image, purpose=PURPOSE, run=self.run,
                             heartbeat=self.heartbeat, console=self.console)
        self._pods.append(pod.helper)
        return pod

    def _lease(self, name: str, what: str) -> None:
        lease = Lease(self.kube, self.namespace, lease_name("etcd", name), self.run, what=what)
        try:
            lease.acquire()
        except LeaseHeld as exc:
            raise EtcdError(exc.message, hint=exc.hint) from None
        self.heartbeat.hold(lease)
        self._steps.append(cleanup.current().push(f"release the lease {lease.name}", lease.release))

    def _remove_leftovers(self) -> None:
        """Pods of earlier replacement runs: we hold the membership lease, so those runs are dead."""
        found = self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods",
                              labelSelector=f"{pods.LABEL_MANAGED}={pods.MANAGED_BY},{pods.LABEL_PURPOSE}={PURPOSE}")
        for pod in found.get("items") or []:
            meta = pod.get("metadata") or {}
            if (meta.get("labels") or {}).get(RUN_ID_LABEL) != self.run.id:
                self.console.say(f"deleting pod {self.namespace}/{meta.get('name')} of an earlier replacement run "
                                 "that is gone")
                pods.HelperPod(self.kube, self.namespace, str(meta.get("name"))).delete(wait=True)

    # --- planning ------------------------------------------------------------------------------------
    def plan(self) -> ReplacePlan:
        """A client dry run: what the API shows, no pod, no etcdctl."""
        target = self._target()
        others = [m for m in self.topology.candidates() if m.node != self.node]
        notes = []
        if target is None:
            notes.append(f"node {self.node} has no etcd mirror pod now: an interrupted replacement would be resumed "
                         "from its journal on the node")
            return ReplacePlan(self.node, "?", None, None, [m.node for m in others], notes)
        doc = self._mirror(target)
        data = membership.host_path(doc, parse_flags(membership.command_of(doc)).get("data-dir", "/var/lib/etcd"))
        ready = [m.node for m in others if m.ready]
        voting = len(self.topology.members)
        if len(ready) < membership.quorum(voting - 1) or voting < 2:
            notes.append(f"only {len(ready)} of the other {len(others)} etcd pods are Ready: the run would most likely "
                         "refuse (it counts healthy members with etcdctl)")
        return ReplacePlan(self.node, target.name, data, membership.aside_name(data, self.run.id),
                           [m.node for m in others], notes)

    def _target(self) -> StaticMember | None:
        return next((m for m in self.topology.members if m.node == self.node), None)

    def _mirror(self, member: StaticMember) -> dict[str, Any]:
        doc: dict[str, Any] = self.kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods/{member.pod}")
        return doc

    # --- running -------------------------------------------------------------------------------------
    def execute(self, *, undo: bool = False) -> ReplaceResult | str:
        started = time.monotonic()
        stack = cleanup.current()
        self._steps.append(stack.push("stop the heartbeat", self.heartbeat.stop))
        try:
            self._lease("membership", "etcd membership changes")
            self._remove_leftovers()
            files = self._host([HostMount(KUBERNETES_DIR, read_only=False)] + (
                [HostMount(self.manifests_dir, read_only=False)]
                if not self.manifests_dir.startswith(KUBERNETES_DIR + "/") else []))
            raw = files.read(JOURNAL)
            journal = Journal(json.loads(raw)) if raw else None
            if undo:
                undone = self._undo(files, journal)
                files.helper.delete(wait=True)
                return undone
            ctl = self._etcdctl(self.node)
            if journal is None:
                journal = self._begin(files, ctl)
                resumed = False
            else:
                resumed = True
                self.console.say(f"resuming the replacement of etcd member {journal.data['name']} on node {self.node} "
                        f"(run {journal.data.get('runID')}, last step done: {journal.step})")
            self._lease(str(journal.data["name"]), f"etcd member {journal.data['name']}")
            # Ctrl-C or SIGTERM unwinds through the cleanup stack, not through the DrError below: say it there.
            resume_note = stack.push("say how to go on", lambda: self.console.say(
                f"the replacement on node {self.node} stopped after step {journal.step if journal else '?'}; its "
                f"journal is {JOURNAL} on the node: run `{self.rerun()}` again to resume"))
            try:
                self._proceed(files, ctl, journal)
                stack.discard(resume_note)
            except DrError as exc:
                stack.discard(resume_note)
                resume = (f"The journal on node {self.node} ({JOURNAL}) records the steps done (last: "
                          f"{journal.step}): run `{self.rerun()}` again to resume"
                          + (f", or `{self.rerun(undo=True)}` to put the member back as it was."
                             if journal.step in UNDOABLE else "."))
                exc.hint = f"{exc.hint}\n{resume}" if exc.hint and "journal" not in exc.hint else (exc.hint or resume)
                raise
            members = ctl.members()
            for pod in self._pods:  # on success quietly; after an error the cleanup stack says what it removes
                pod.delete(wait=True)
            return ReplaceResult(self.node, str(journal.data["name"]), journal.data.get("oldID"),
                                 journal.data.get("newID"), bool(journal.data.get("learner")),
                                 str(journal.data["dataDir"]), journal.data.get("oldDataDir"), resumed,
                                 time.monotonic() - started, members, list(journal.data.get("history") or []))
        finally:
            for step in reversed(self._steps):
                if not step.done:
                    stack.run(step)

    def _begin(self, files: HostPod, ctl: Etcdctl) -> Journal:
        """Checks before the first change, the question, and the journal's first entry."""
        target = self._target()
        if target is None:
            known = ", ".join(m.node for m in self.topology.members)
            raise EtcdError(f'node "{self.node}" runs no etcd static pod (etcd members run on: {known})',
                            hint="kubectl dr finds a member through its mirror pod in kube-system. A node that was "
                                 "rebuilt needs its etcd manifest back first (kubeadm join --control-plane writes it).")
        original = files.read(self.manifest_path)
        if original is None:
            raise EtcdError(f"{self.manifest_path} is not on node {self.node}, although its mirror pod {target.pod} "
                            "exists", hint="Give the kubelet's staticPodPath with --manifests-dir.")
        doc = yaml.safe_load(original)
        flags = parse_flags(membership.command_of(doc))
        if flags.get("name", self.node) != target.name:
            raise EtcdError(f"{self.manifest_path} on node {self.node} names member {flags.get('name')!r}, its "
                            f"running pod {target.name!r}: the file is not the pod that runs")
        data_dir = membership.host_path(doc, flags.get("data-dir", "/var/lib/etcd"))
        members = ctl.members()
        peers = [u for u in flags.get("initial-advertise-peer-urls", "").split(",") if u]
        old = next((m for m in members if m.name == target.name), None) or next(
            (m for m in members if set(peers) & set(m.peer_urls)), None)
        if old is None:
            raise EtcdError(f"etcd has no member named {target.name} (members: "
                            f"{', '.join(m.name or m.id for m in members)})",
                            hint="Nothing to replace; if it was removed by hand, add it back with etcdctl member add.")
        healthy = ctl.healthy(members)
        check = membership.check_quorum(members, healthy, old.id, target.name)
        version = (ctl.status(ctl.member.client_url) or {}).get("version") or ""
        learner = _has_learners(str(version))
        self.console.say(f"etcd member {target.name} ({old.id}) on node {self.node} is "
                f"{'healthy' if old.id in healthy else 'not healthy'}; without it the cluster has "
                f"{count(check.after_removal, 'voting member')}, {len(check.healthy_others)} healthy "
                f"(quorum {check.needed})")
        aside = membership.aside_name(data_dir, self.run.id)
        self.console.confirm(f"replace the etcd member {target.name} on node {self.node} (its data dir {data_dir} is "
                             "kept as "
                     f"{aside})")
        files.mkdir(JOURNAL_DIR)
        journal = Journal({"version": 1, "runID": self.run.id, "node": self.node, "name": target.name,
                           "oldID": old.id, "peerURLs": old.peer_urls or peers,
                           "clientURLs": old.client_urls or list(target.advertise_client_urls),
                           "manifest": self.manifest_path, "originalSha256": _sha(original),
                           "dataDir": data_dir, "plannedOldDataDir": aside, "learner": learner,
                           "etcdVersion": version})
        journal.mark(files, "planned")
        return journal

    def _undo(self, files: HostPod, journal: Journal | None) -> str:
        if journal is None:
            raise DrError(f"no etcd member replacement to undo on node {self.node} (no journal in {JOURNAL_DIR})")
        if not journal.reached("stopped") or journal.step in UNDOABLE:
            if files.exists(PARKED) and not files.exists(self.manifest_path):
                files.rename(PARKED, self.manifest_path)
            files.rename(JOURNAL, f"{JOURNAL_DIR}/journal-{journal.data.get('runID')}.undone.json")
            return (f"undone: {self.manifest_path} is back on node {self.node}; member {journal.data['name']} runs on "
                    "its own data dir as before")
        raise DrError(f"the replacement on node {self.node} cannot be undone: member {journal.data['name']} "
                      f"({journal.data.get('oldID')}) was already removed from etcd (last step: {journal.step}), "
                      "so its old data cannot rejoin",
                      hint=f"Run `{self.rerun()}` again to finish it.")

    def _proceed(self, files: HostPod, ctl: Etcdctl, j: Journal) -> None:
        d = j.data
        name, peers = str(d["name"]), list(d["peerURLs"])
        deadline = time.monotonic() + self.timeout
        if not j.reached("stopped"):
            mirror = f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods/etcd-{self.node}"
            self.console.say(f"stopping etcd member {name}: moving {self.manifest_path} to {PARKED}")
            if files.exists(self.manifest_path):
                files.rename(self.manifest_path, PARKED)
            j.mark(files, "stopped")
            self._wait(lambda: not self.kube.exists(mirror), f"the kubelet on {self.node} to stop the etcd pod",
                       min(deadline, time.monotonic() + 120), period=API_POLL)
        if not j.reached("removed"):
            members = ctl.members()
            if any(m.id == d["oldID"] for m in members):
                self.console.say(f"removing member {name} ({d['oldID']}) from etcd")
                ctl.must([ctl.member.client_url], "member", "remove", str(d["oldID"]))
            j.mark(files, "removed")
        if not j.reached("moved-aside"):
            data_dir, aside = str(d["dataDir"]), str(d["plannedOldDataDir"])
            host = self._host([HostMount(posixpath.dirname(data_dir), read_only=False)])
            try:
                moved: str | None = None
                if host.exists(data_dir):
                    if not host.exists(aside):
                        self.console.say(f"keeping the old data dir {data_dir} of {name} as {aside}")
                        host.rename(data_dir, aside)
                    moved = aside
                host.mkdir(data_dir, 0o700)
            finally:
                host.helper.delete(wait=True)
            j.mark(files, "moved-aside", oldDataDir=moved)
        if not j.reached("added"):
            members = ctl.members()
            existing = next((m for m in members if set(peers) & set(m.peer_urls)), None)
            if existing is None:
                args = ["member", "add", name, f"--peer-urls={','.join(peers)}", "-w", "json"]
                if d.get("learner"):
                    args.insert(3, "--learner")
                self.console.say(f"adding {name} back to etcd{' as a learner' if d.get('learner') else ''}")
                added = json.loads(ctl.must([ctl.member.client_url], *args) or b"{}")
                new_id = f"{int((added.get('member') or {}).get('ID', 0)):x}"
            else:
                new_id = existing.id
            j.mark(files, "added", newID=new_id)
        if not j.reached("started"):
            members = ctl.members()
            original = files.read(PARKED) or files.read(self.manifest_path)
            if original is None:
                raise EtcdError(f"the etcd manifest of node {self.node} is gone from both {PARKED} and "
                                f"{self.manifest_path}", hint=f"Its journal is {JOURNAL}.")
            doc = membership.set_flags(yaml.safe_load(original), {
                "initial-cluster-state": "existing",
                "initial-cluster": membership.initial_cluster(members, name, peers)})
            self.console.say(f"starting {name} with --initial-cluster-state=existing")
            files.write(self.manifest_path, yaml.safe_dump(doc, sort_keys=False).encode(), mode=0o600)
            j.mark(files, "started")
            self._wait_running(membership.command_of(doc), "the kubelet to start the new etcd pod", deadline)
        if not j.reached("promoted"):
            self._promote(ctl, j, deadline)
            j.mark(files, "promoted")
        if not j.reached("manifest-restored"):
            original = files.read(PARKED)
            current = files.read(self.manifest_path)
            if original is not None and current != original:
                self.console.say(f"putting the original {self.manifest_path} back (etcd ignores --initial-cluster* "
                                 "now that "
                        "its data dir exists)")
                files.write(self.manifest_path, original, mode=0o600)
            if original is not None:
                self._wait_running(membership.command_of(yaml.safe_load(original)), "the kubelet to restart etcd",
                                   deadline)
            j.mark(files, "manifest-restored")
        self._wait_all_healthy(ctl, deadline)
        if files.exists(PARKED):
            files.remove(PARKED)
        j.mark(files, "done")
        files.rename(JOURNAL, f"{JOURNAL_DIR}/journal-{d.get('runID')}.done.json")

    def _wait_running(self, command: list[str], what: str, deadline: float) -> None:
        """Until the mirror pod shows the etcd container with exactly this command line and Ready: the kubelet
        runs the manifest we wrote (whether this run or an interrupted one wrote it)."""
        def running() -> bool:
            try:
                pod = self.kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods/etcd-{self.node}")
            except ApiError as exc:
                if exc.status == 404:
                    return False
                raise
            if staticpods.command_of(pod, "etcd") != command:
                return False
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            return any(c.get("name") == "etcd" and (c.get("state") or {}).get("running") for c in statuses)
        self._wait(running, what, deadline, period=API_POLL)

    def _promote(self, ctl: Etcdctl, j: Journal, deadline: float) -> None:
        new_id, name = str(j.data["newID"]), str(j.data["name"])
        said = False
        pause = pauses(2 * POLL)
        while True:
            members = ctl.members()
            me = next((m for m in members if m.id == new_id), None)
            if me is None:
                raise EtcdError(f"member {name} ({new_id}) is no longer in etcd's member list",
                                hint=f"Someone removed it meanwhile; run `{self.rerun()}` again after checking "
                                     "`kubectl dr etcd status`.")
            if not me.is_learner:
                return
            ok, _, err = ctl([ctl.member.client_url], "member", "promote", new_id)
            if ok:
                self.console.say(f"promoted {name} ({new_id}) to a voting member")
                return
            if NOT_IN_SYNC not in err and "not started" not in err:
                raise EtcdError(f"etcdctl member promote {new_id} failed: {err[-800:]}")
            if not said:
                self.console.say(f"waiting for learner {name} to catch up with the leader")
                said = True
            if time.monotonic() > deadline:
                raise EtcdError(f"learner {name} did not catch up within {units.duration(self.timeout)}: {err[-300:]}",
                                hint=f"Check its log (kubectl logs -n {ETCD_NAMESPACE} etcd-{self.node}); run "
                                     f"`{self.rerun()}` again to go on waiting (it resumes).")
            time.sleep(next(pause))

    def _wait_all_healthy(self, ctl: Etcdctl, deadline: float) -> None:
        def ok() -> bool:
            members = ctl.members()
            return all(not m.is_learner and m.name for m in members) and ctl.healthy(members) == {
                m.id for m in members}
        self._wait(ok, "every etcd member to be healthy", deadline)

    def _wait(self, done: Callable[[], bool], what: str, deadline: float, period: float = POLL) -> None:
        self.console.say(f"waiting for {what}")
        pause = pauses(period)
        while not done():
            self.heartbeat.check()
            if time.monotonic() > deadline:
                raise EtcdError(f"timed out waiting for {what}",
                                hint=f"The journal on node {self.node} ({JOURNAL}) records every step done: run "
                                     f"`{self.rerun()}` again to resume.")
            time.sleep(next(pause))


def _has_learners(version: str) -> bool:
    """Learners (`member add --learner`, `member promote`) came with etcd 3.4."""
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return True  # kubeadm has shipped ≥ 3.4 since Kubernetes 1.17
    return (major, minor) >= (3, 4)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
