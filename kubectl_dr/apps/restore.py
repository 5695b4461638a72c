"""`namespace restore`: an application backup into this cluster or another, checked before it begins.

1. Preflight: the backup's parts checked (size, SHA-256); the target's discovery read; every object
   mapped (namespace, storage classes) and looked up; `--existing` decides on collisions (fail: nothing
   is created, and every collision is named).
2. The server dry-run pass: every create sent with dryRun=All, in order, before the first real one.
   Objects in a namespace (or of a definition) that does not exist yet are checked right after the
   namespace and definitions are created; a refusal then deletes those again, so nothing is left.
3. Creates in Velero's order, definitions waited for; the workloads (Velero's order, last) wait for step 4.
4. Claims' data through the `pvc restore` job (no workload exists yet, so none can start on a volume
   being restored), then the workloads, created at 0 replicas with their records and scaled up.
A rerun after an interruption finds what the earlier run created (marked with the backup's ID), and
finishes: claims not yet restored, then the scale-up.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.apps import apply, mapping
from kubectl_dr.apps.cleaning import ref
from kubectl_dr.apps.collect import NAMESPACE_OBJECT, RECORDED_CLUSTER_RESOURCES
from kubectl_dr.apps.ordering import WORKLOADS, order_key
from kubectl_dr.apps.resources import Catalog, ResourceType, discover
from kubectl_dr.apps.source import AppBackup, find, read
from kubectl_dr.clusters import origin_note
from kubectl_dr.console import Console, Progress
from kubectl_dr.errors import ApiError, DrError, Interrupted
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.pauses import pauses
from kubectl_dr.repo import Repository
from kubectl_dr.runs import Heartbeat, Lease, lease_name
from kubectl_dr.session import Session
from kubectl_dr.units import count, size
from kubectl_dr.workloads import records, scaling

Json = dict[str, Any]
DATA_RESTORED = "kubectl-dr.io/data-restored-from"
# On the target namespace once a restore has finished (taken off when a run of it starts): a later run of the same
# backup is then a new restore, not the finishing of an interrupted one, so what exists follows --existing.
FINISHED = "kubectl-dr.io/restore-finished-from"
EXISTING = ("fail", "skip", "update")
CRD = "customresourcedefinitions.apiextensions.k8s.io"
EARLIER_RUN = "restored by an earlier run of this restore"
# Made by the cluster in every new namespace: found there, it is not a collision.
MADE_BY_CLUSTER = {("ServiceAccount", "default")}


class DryRunRefused(DrError):
    """The server dry run refused objects; nothing of the restore is left in the cluster."""


@dataclass
class RestoreOptions:
    namespace: str
    source: str
    to: str | None = None
    namespace_mapping: dict[str, str] = field(default_factory=dict)
    storage_class_mapping: dict[str, str] = field(default_factory=dict)
    existing: str = "fail"
    preserve_node_ports: bool = False
    skip_server_dry_run: bool = False
    volumes: bool = True
    image: str | None = None


@dataclass
class Step:
    obj: Json
    rtype: ResourceType
    action: str  # create, skip, update
    reason: str = ""
    live: Json | None = None
    checked: str = ""  # the server dry run: "accepted", "deferred: ...", or the refusal

    @property
    def ref(self) -> str:
        return ref(self.obj)

    def to_dict(self) -> Json:
        return {"object": self.ref, "action": self.action, "reason": self.reason or None,
                "serverDryRun": self.checked or None}


@dataclass
class RestoreResult:
    backup: str
    namespace: str
    steps: list[Step]
    claims: list[Json]
    excluded: list[Json]
    scaled: list[str] = field(default_factory=list)
    dry_run: str = "none"
    origin: str | None = None  # another cluster's backup: said in the result too, not only as it runs

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "skip": 0, "update": 0}
        for step in self.steps:
            out[step.action] += 1
        return out

    def to_dict(self) -> Json:
        return {"kind": "NamespaceRestore" if self.dry_run == "none" else "NamespaceRestorePlan",
                "dryRun": self.dry_run, "backup": self.backup, "namespace": self.namespace,
                "counts": self.counts(), "objects": [s.to_dict() for s in self.steps], "claims": self.claims,
                "scaled": self.scaled, "leftOutAtBackup": self.excluded, "origin": self.origin}

    def summary(self) -> str:
        c = self.counts()
        would = "(dry run) would restore" if self.dry_run != "none" else "restored"
        verbs = ("create", "skip", "update") if self.dry_run != "none" else ("created", "skipped", "updated")
        lines = [f"{would} backup {self.backup} into namespace {self.namespace}: "
                 f"{c['create']} {verbs[0]}, {c['skip']} {verbs[1]}, {c['update']} {verbs[2]}"]
        if self.origin:
            lines.append(f"  {self.origin}")
        for described in cluster_wide(self.steps):
            lines.append(f"  create cluster-wide {described}")
        wide = set(cluster_wide(self.steps, refs_only=True))
        for step in self.steps:
            # A plan names every object it would create; a finished run only what it did not simply create.
            if step.ref in wide:
                continue
            if step.action != "create" or self.dry_run != "none" or (step.checked and step.checked != "accepted"):
                why = f" ({step.reason})" if step.reason else ""
                check = f" [server dry run: {step.checked}]" if step.checked and step.checked != "accepted" else ""
                lines.append(f"  {step.action} {step.ref}{why}{check}")
        for claim in self.claims:
            lines.append(f"  claim {claim['name']}: {claim['state']}")
        for item in self.scaled:
            lines.append(f"  {item}")
        if self.excluded:
            lines.append(f"  left out at backup time: {count(len(self.excluded), 'object')} "
                         "(-o yaml lists them with the reasons)")
        return "\n".join(lines) + "\n"


class _Confirmed:
    """The console the claims' restores get: the user confirmed the whole restore once."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def say(self, text: str) -> None:
        self.console.say(text)

    def warn(self, text: str) -> None:
        self.console.warn(text)

    def confirm(self, question: str, *, reason: str = "", hint: str = "", prompt: str = "") -> None:
        return None

    def progress(self, description: str, total: int | None) -> AbstractContextManager[Progress]:
        return self.console.progress(description, total)

    @property
    def is_interactive(self) -> bool:
        return self.console.is_interactive


def run_id_for(backup_id: str) -> str:
    """The replica records' run: the same for every run of one restore, so a rerun finishes the first."""
    return f"restore-{backup_id}"


def run(session: Session, repo: Repository, opts: RestoreOptions) -> RestoreResult:
    kube, console, dry_run = session.kube, session.console, session.dry_run
    if opts.existing not in EXISTING:
        raise DrError(f"--existing must be one of {', '.join(EXISTING)}, not {opts.existing!r}")
    identity, _ = try_cluster_identity(kube)
    backup = find(repo, opts.source, opts.namespace, identity.uid if identity else None)
    app = read(repo, backup)
    target = opts.to or opts.namespace_mapping.get(opts.namespace, opts.namespace)
    maps = mapping.Mapping({**opts.namespace_mapping, opts.namespace: target}, opts.storage_class_mapping,
                           opts.preserve_node_ports)
    # A restore that finished, run again: with --existing fail (the default) there is nothing to do, as before;
    # with skip or update it is restored again over what changed since (what exists follows --existing).
    if dry_run == "none":
        _hold_target(session, target)
    done_before = _finished(kube, target) == app.id
    finished = done_before and opts.existing != "fail"
    steps = _plan(kube, app, opts, maps, target, finished=finished)
    claims = [{**c, "name": c["name"], "state": "would be restored" if opts.volumes else "left out (--no-volumes)"}
              for c in app.claims(opts.namespace)]
    excluded = list(app.record.get("excluded") or [])
    if opts.volumes:
        _claim_backups_present(repo, app, claims)
    origin = origin_note(app.id, backup.manifest.cluster, identity) if identity is not None else None
    if origin:
        console.say(f"note: {origin}")
    result = RestoreResult(app.id, target, steps, claims, excluded, dry_run=dry_run, origin=origin)
    earlier = sum(1 for s in steps if s.reason == EARLIER_RUN)
    if done_before and not finished:
        console.say(f"the restore of backup {app.id} into {target} finished before: nothing to do; to restore it "
                    "again over what changed since, pass --existing update (or skip: only what is missing)")
    elif earlier:
        console.say(f"finishing an earlier run of this restore: {count(earlier, 'object')} of it already in "
                    f"{target}; claims not marked restored are restored again, workloads scaled up last")
    collisions = [s for s in steps if s.action == "collision"]
    if collisions:
        names = "\n  ".join(f"{s.ref} ({s.reason})" for s in collisions)
        raise DrError(f"{count(len(collisions), 'object')} of the backup already exist in the target, and "
                      f"--existing=fail: nothing was created:\n  {names}",
                      hint="Restore into another namespace (--to NEW), or choose --existing skip|update.")
    if dry_run == "client":
        return result
    if dry_run == "server" or not opts.skip_server_dry_run:
        _server_dry_run(kube, [s for s in steps if s.action in ("create", "update")], console, early=True)
    if dry_run == "server":
        return result
    wide = cluster_wide(steps)
    console.confirm(f"restore {count(len(steps), 'object')} and {count(len(claims), 'claim')} of backup {app.id} "
                    f"into namespace {target} ({result.counts()['create']} to create"
                    + (f"; cluster-wide: {', '.join(wide)}" if wide else "") + ")")
    try:
        if finished:  # a new run of a finished restore: interrupted, it is finished by a rerun as any other
            _start_again(kube, target, claims if opts.volumes else [])
        _apply(kube, steps, opts, console)
        _claims(session, repo, app, opts, target, result)
        # The workloads only now, at 0 replicas with their records: while the claims were restored no consumer
        # existed, so no `pvc restore` could start one on a volume it had not finished (its undo starts the
        # consumers it stopped).
        _write(kube, [s for s in steps if s.rtype.name in WORKLOADS and s.action in ("create", "update")], console)
        console.say(f"created {count(sum(1 for s in steps if s.action == 'create'), 'object')}")
        restored = scaling.scale_restore(kube, target, run_id=run_id_for(app.id), console=console)
        _mark_finished(kube, target, app.id)
    except DryRunRefused:
        raise  # what it created to check the rest it deleted again: nothing to finish
    except (DrError, Interrupted) as exc:
        _how_to_finish(session, exc, app.id, opts, target)
        raise
    result.scaled = [f"{scaling.resource_name(r.kind)}/{r.name}: {r.message}" for r in restored]
    return result


def _how_to_finish(session: Session, exc: DrError | Interrupted, backup_id: str, opts: RestoreOptions,
                   target: str) -> None:
    """What an error or an interruption after the first create tells the user: the same restore, run again,
    finishes it (what exists carries the backup's ID and is skipped; claims not marked restored are restored
    again; the workloads, at 0 with their records, are scaled up last). The backup is pinned by its ID, as a
    `latest` could name a newer one by then.

    An interruption's hint is replaced, not extended: the only one it can carry is a claim's `pvc restore`
    note about consumers kept stopped, and a namespace restore has none yet."""
    rerun = session.command_line(drop=["--from", "--dry-run"], add=["--from", backup_id],
                                 default=["namespace", "restore", opts.namespace, "--to", target, "--yes"])
    note = (f"Namespace {target} is partly restored: no workload runs before every claim's data is restored "
            f"(they are created at 0 replicas, with their records, and scaled up last). To finish, run the "
            f"restore again:\n  {rerun}")
    exc.hint = f"{exc.hint}\n{note}" if exc.hint and isinstance(exc, DrError) else note


LEASE_NAMESPACE = "kube-system"  # the target may not exist yet: its lease cannot live in it


def _hold_target(session: Session, target: str) -> None:
    """One restore into a namespace at a time: a second run would take the first's new objects for an interrupted
    run's and skip them. A Lease in kube-system, renewed while the restore runs and released however it ends; a
    user who may not write leases there is told, and goes on without it."""
    console = session.console
    lease = Lease(session.kube, LEASE_NAMESPACE, lease_name("ns-restore", target), session.run,
                  what=f"a restore into namespace {target}")
    try:
        lease.acquire()
    except ApiError as exc:
        if exc.status != 403:
            raise
        console.warn(f"warning: no lease on restores into {target} (forbidden in {LEASE_NAMESPACE}): a second "
                     "restore into it at the same time would not be stopped")
        return
    stack = cleanup.current()
    stack.push(f"release the lease on restores into namespace {target}", lease.release)
    heartbeat = Heartbeat(console.warn)
    stack.push("stop the lease's heartbeat", heartbeat.stop)
    heartbeat.hold(lease)


def _finished(kube: Kube, target: str) -> str | None:
    """The backup whose restore into ``target`` last finished, or None (no namespace yet, or none finished)."""
    try:
        namespace = kube.get(f"/api/v1/namespaces/{target}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    value = ((namespace.get("metadata") or {}).get("annotations") or {}).get(FINISHED)
    return str(value) if value else None


def _start_again(kube: Kube, target: str, claims: list[Json]) -> None:
    """A finished restore run again: its mark and its claims' data marks go first, so that an interruption of
    this run leaves what a first run would (the rerun then restores every claim's data, which changed since)."""
    _mark_finished(kube, target, None)
    for claim in claims:
        try:
            kube.request("PATCH", f"/api/v1/namespaces/{target}/persistentvolumeclaims/{claim['name']}",
                         body={"metadata": {"annotations": {DATA_RESTORED: None}}},
                         content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status != 404:
                raise


def _mark_finished(kube: Kube, target: str, backup_id: str | None) -> None:
    kube.request("PATCH", f"/api/v1/namespaces/{target}", body={"metadata": {"annotations": {FINISHED: backup_id}}},
                 content_type="application/merge-patch+json")


def _claim_backups_present(repo: Repository, app: AppBackup, claims: list[Json]) -> None:
    """Every claim's data is a `pvc` backup of its own: check each is there before any object is created
    (retention or `backups delete` may have removed one)."""
    from kubectl_dr.repo import BackupNotFoundError

    missing = []
    for claim in claims:
        try:
            repo.get(str(claim.get("backup")))
        except BackupNotFoundError:
            missing.append(f"{claim['name']} (backup {claim.get('backup')})")
    if missing:
        raise DrError(f"backup {app.id} names the data of {', '.join(missing)}, which {repo.location} no longer "
                      "holds: nothing was created",
                      hint="Restore the objects alone with --no-volumes, or choose a complete backup with --from.")


def _plan(kube: Kube, app: AppBackup, opts: RestoreOptions, maps: mapping.Mapping, target: str, *,
          finished: bool = False) -> list[Step]:
    """``finished``: a run of this restore finished before; what carries the backup's ID is then not an
    interrupted run's work to skip, but an object that exists (--existing decides)."""
    catalog = discover(kube)
    objects = app.of_namespace(opts.namespace)
    static = {o["metadata"]["name"] for o in objects if o.get("kind") == "PersistentVolume"}
    pending = {(apply.type_of_definition(o).group, apply.type_of_definition(o).kind): apply.type_of_definition(o)
               for o in objects if o.get("kind") == "CustomResourceDefinition"}
    now = records.rfc3339()
    steps: list[Step] = []
    unknown: list[str] = []
    foreign: list[str] = []
    lookup = apply.Existing(kube)
    recorded = set(app.record.get("clusterScoped") or [])
    for obj in objects:
        shaped = mapping.shape(obj, maps, app.id, static_volumes=static, run_id=run_id_for(app.id), now=now)
        rtype = _type(catalog, pending, shaped)
        if rtype is None:
            unknown.append(f"{shaped.get('kind')} ({shaped.get('apiVersion')})")
            continue
        if (why := not_the_namespaces(obj, rtype, opts.namespace, recorded)) is not None:
            foreign.append(f"{ref(obj)}: {why}")
            continue
        shaped["apiVersion"] = rtype.api_version
        live = lookup.find(rtype, shaped) if catalog.for_object(shaped) is not None else None
        steps.append(_decide(shaped, rtype, live, opts.existing, None if finished else app.id, not rtype.namespaced))
    if foreign:
        raise DrError(f"backup {app.id} holds objects no namespace backup of {opts.namespace} holds: nothing was "
                      "created:\n  " + "\n  ".join(foreign[:20]) + ("\n  …" if len(foreign) > 20 else ""),
                      hint="kubectl dr did not write them: the backup was changed in the repository after it was "
                           "taken. Restore another backup (--from ID) and check who can write the repository.")
    if unknown:
        raise DrError(f"the target cluster does not serve {', '.join(sorted(set(unknown)))}: nothing was created",
                      hint="Install the definitions or API services these objects need, or leave them out with "
                           "`namespace backup --exclude-resources`.")
    steps.sort(key=lambda s: order_key(s.rtype.name, s.obj))
    return steps


def cluster_wide(steps: list[Step], *, refs_only: bool = False) -> list[str]:
    """The cluster-scoped objects a restore creates, named where it is asked (a persistent volume with what it
    mounts: a hostPath one gives its pods a directory of the node)."""
    out = []
    for step in steps:
        if step.action != "create" or step.rtype.namespaced or step.rtype.name == NAMESPACE_OBJECT:
            continue
        described = ref(step.obj)
        if refs_only:
            out.append(described)
            continue
        if step.rtype.name == "persistentvolumes":
            spec = step.obj.get("spec") or {}
            source = next((k for k in spec if isinstance(spec[k], dict) and k not in (
                "capacity", "claimRef", "nodeAffinity") and k != "mountOptions"), "no volume source")
            where = spec.get(source) or {}
            detail = where.get("path") or where.get("driver") or where.get("server") or ""
            described += f" ({source}{' ' + str(detail)[:100] if detail else ''})"
        out.append(described)
    return out


def not_the_namespaces(obj: Json, rtype: ResourceType, namespace: str, recorded: set[str]) -> str | None:
    """Why an object of the backup is not one a restore of ``namespace`` may create, or None. What is cluster-scoped
    is the cluster's discovery's word, and which cluster-scoped kinds a backup records the tool's own table:
    neither is the backup's (its record only narrows which objects of those kinds were recorded)."""
    namespace_of = (obj.get("metadata") or {}).get("namespace")
    if rtype.namespaced:
        return None if namespace_of == namespace else f"an object of namespace {str(namespace_of)[:63]!r}"
    if rtype.name == NAMESPACE_OBJECT:
        name = (obj.get("metadata") or {}).get("name")
        return None if name == namespace else f"another namespace, {str(name)[:63]!r}"
    if rtype.name not in RECORDED_CLUSTER_RESOURCES:
        return f"cluster-scoped {rtype.name}, which a namespace backup never records"
    if namespace_of or ref(obj) not in recorded:
        return "cluster-scoped, and not among the objects the backup recorded as needed"
    return None


def _type(catalog: Catalog, pending: dict[tuple[str, str], ResourceType], obj: Json) -> ResourceType | None:
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    found = catalog.for_object(obj) or pending.get((group, str(obj.get("kind"))))
    return found


def _decide(obj: Json, rtype: ResourceType, live: Json | None, existing: str, backup_id: str | None,
            cluster_scoped: bool) -> Step:
    """``backup_id``: what an interrupted run of this restore marked (None: a finished run's objects exist)."""
    if live is None:
        return Step(obj, rtype, "create")
    meta = live.get("metadata") or {}
    if backup_id is not None and (meta.get("annotations") or {}).get(mapping.RESTORED_FROM) == backup_id:
        return Step(obj, rtype, "skip", EARLIER_RUN, live)
    if obj.get("kind") == "Namespace":
        return Step(obj, rtype, "skip", "the namespace exists; its objects are restored into it", live)
    if cluster_scoped:
        return Step(obj, rtype, "skip", "cluster-scoped and present: restored only where missing", live)
    if (obj.get("kind"), meta.get("name")) in MADE_BY_CLUSTER:
        return Step(obj, rtype, "skip", "made by the cluster in every namespace", live)
    if existing == "skip":
        return Step(obj, rtype, "skip", "exists (--existing=skip): left as it is", live)
    if existing == "update":
        return Step(obj, rtype, "update", "exists (--existing=update): replaced by the backup's", live)
    return Step(obj, rtype, "collision", "exists", live)


def _account_of(step: Step) -> tuple[str, str] | None:
    """(namespace, service account) a Pod step runs as: ServiceAccount admission refuses the pod, dry run
    included, while that account does not exist."""
    if step.obj.get("kind") != "Pod":
        return None
    spec = step.obj.get("spec") or {}
    return (str(step.obj["metadata"].get("namespace", "")),
            str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"))


def _accounts_pods_need(steps: list[Step]) -> set[tuple[str, str]]:
    """The ServiceAccounts this restore creates that a Pod of it runs as."""
    created = {(str(s.obj["metadata"].get("namespace", "")), str(s.obj["metadata"].get("name")))
               for s in steps if s.obj.get("kind") == "ServiceAccount" and s.action == "create"}
    return {a for s in steps if s.action in ("create", "update") and (a := _account_of(s)) in created}


def _checkable_now(step: Step, created_namespaces: set[str], pending_kinds: set[tuple[str, str]],
                   pending_accounts: set[tuple[str, str]]) -> bool:
    namespace = step.obj["metadata"].get("namespace")
    if namespace and namespace in created_namespaces:
        return False
    if _account_of(step) in pending_accounts:
        return False
    return (step.rtype.group, step.rtype.kind) not in pending_kinds


def _server_dry_run(kube: Kube, steps: list[Step], console: Console, *, early: bool,
                    undone: list[str] | None = None) -> None:
    """Every create and update with dryRun=All; all refusals are collected, then raised together."""
    created = {s.obj["metadata"]["name"] for s in steps if s.obj.get("kind") == "Namespace" and s.action == "create"}
    pending = {(apply.type_of_definition(s.obj).group, apply.type_of_definition(s.obj).kind) for s in steps
               if s.obj.get("kind") == "CustomResourceDefinition" and s.action == "create"}
    accounts = _accounts_pods_need(steps)
    refused: list[str] = []
    checked = 0
    for step in steps:
        if step.checked == "accepted":
            continue
        if early and not _checkable_now(step, created, pending, accounts):
            step.checked = "deferred: checked once its namespace, definition or service account exists"
            continue
        try:
            if step.action == "update" and step.live is not None:
                apply.update(kube, step.rtype, step.obj, step.live, dry_run=True)
            else:
                apply.create(kube, step.rtype, step.obj, dry_run=True)
        except ApiError as exc:
            step.checked = exc.message
            refused.append(f"{step.ref}: {exc.message}")
            continue
        step.checked = "accepted"
        checked += 1
    if refused:
        left = (f"; {', '.join(undone)}, created first so the rest could be checked, deleted again"
                if undone else "; nothing was created")
        raise DryRunRefused(f"the server dry run refused {count(len(refused), 'object')}{left}:\n  "
                            + "\n  ".join(refused),
                            hint="Fix what the server says (quota, admission, Pod Security, RBAC, a taken node "
                                 "port), or leave the objects out, then run the restore again.")
    deferred = sum(1 for s in steps if s.checked.startswith("deferred"))
    console.say(f"server dry run: {count(checked, 'object')} accepted"
                + (f"; {deferred} deferred until their namespace, definition or service account exists (the real "
                   "run checks them then, before it writes any)" if deferred else ""))


def _apply(kube: Kube, steps: list[Step], opts: RestoreOptions, console: Console) -> None:
    # Created before the second dry run, and deleted again if it refuses anything: namespaces, definitions,
    # and the service accounts pods of the restore run as (without them the server refuses those pods).
    accounts = _accounts_pods_need(steps)
    first = [s for s in steps
             if s.action == "create" and (s.obj.get("kind") in ("Namespace", "CustomResourceDefinition") or (
                 s.obj.get("kind") == "ServiceAccount"
                 and (s.obj["metadata"].get("namespace"), s.obj["metadata"].get("name")) in accounts))]
    made: list[Step] = []
    for step in first:
        try:
            apply.create(kube, step.rtype, step.obj, dry_run=False)
        except ApiError as exc:
            # The namespace just created: its controller makes the `default` service account at once, and it
            # may be there before ours. The backup's (its image pull secrets) is written over it; not ours to
            # delete again.
            live = apply.current(kube, step.rtype, step.obj) if exc.status == 409 else None
            if live is None or step.obj.get("kind") != "ServiceAccount":
                raise
            apply.update(kube, step.rtype, step.obj, live, dry_run=False)
            step.action, step.reason = "update", "made by the cluster with its namespace: the backup's written over it"
            continue
        made.append(step)
        if step.obj.get("kind") == "CustomResourceDefinition":
            apply.wait_established(kube, step.obj, apply.type_of_definition(step.obj))
            console.say(f"created {step.ref}, established and served")
        else:
            console.say(f"created {step.ref}")
    rest = [s for s in steps if s not in first and s.action in ("create", "update")]
    if not opts.skip_server_dry_run and any(not s.checked.startswith("accepted") for s in rest):
        try:
            _server_dry_run(kube, rest, console, early=False, undone=[s.ref for s in made])
        except DrError:
            for step in reversed(made):  # empty and ours: leave nothing behind
                apply.delete(kube, step.rtype, step.obj)
            raise
    _write(kube, [s for s in rest if s.rtype.name not in WORKLOADS], console)


def _write(kube: Kube, steps: list[Step], console: Console) -> None:
    """Create (or update) the steps in their order, saying so after each resource type: the user sees how
    far a restore got, and an interrupted one is known to have got at least that far."""
    for _, group in itertools.groupby(steps, key=lambda s: s.rtype.name):
        done = list(group)
        for step in done:
            _write_one(kube, step)
        for action in ("create", "update", "skip"):
            names = [s.obj["metadata"]["name"] for s in done if s.action == action]
            if names:
                verb = {"create": "created", "update": "updated", "skip": "found"}[action]
                rtype = done[0].rtype
                console.say(f"{verb} {rtype.name}: {', '.join(names)}")


def _write_one(kube: Kube, step: Step) -> None:
    if step.action == "update" and step.live is not None:
        live = apply.current(kube, step.rtype, step.obj) or step.live
        apply.update(kube, step.rtype, step.obj, live, dry_run=False)
    else:
        try:
            apply.create(kube, step.rtype, step.obj, dry_run=False)
        except ApiError as exc:
            if exc.status != 409:
                raise
            step.action, step.reason = "skip", "created meanwhile by the cluster (AlreadyExists)"


def _claims(session: Session, repo: Repository, app: AppBackup, opts: RestoreOptions, target: str,
            result: RestoreResult) -> None:
    from kubectl_dr.volumes import restore as pvc_restore

    kube = session.kube
    # argv left out: a claim's own rerun hint then names its `pvc restore`, not this command with its flags.
    confirmed = dataclasses.replace(session, console=_Confirmed(session.console), argv=())

    skipped = {s.obj["metadata"]["name"] for s in result.steps
               if s.obj.get("kind") == "PersistentVolumeClaim" and s.action == "skip"
               and s.reason != EARLIER_RUN}
    for claim in result.claims:
        if not opts.volumes:
            continue
        if claim["name"] in skipped:
            claim["state"] = "left alone: the claim existed and was skipped"
            continue
        path = f"/api/v1/namespaces/{target}/persistentvolumeclaims/{claim['name']}"
        live = _bound(kube, session.console, path, claim["name"])
        if (live["metadata"].get("annotations") or {}).get(DATA_RESTORED) == app.id:
            claim["state"] = "data restored by an earlier run"
            continue
        kwargs: dict[str, Any] = {"image": opts.image} if opts.image else {}
        done = pvc_restore.run(confirmed, repo, pvc_restore.RestoreOptions(target, claim["name"], claim["backup"],
                                                                           **kwargs))
        assert isinstance(done, pvc_restore.RestoreResult)
        kube.request("PATCH", path, body={"metadata": {"annotations": {DATA_RESTORED: app.id}}},
                     content_type="application/merge-patch+json")
        claim["state"] = (f"restored {size(done.checked.size)}, {count(len(done.source.entries), 'entry', 'entries')}"
                          f" from {claim['backup']}")
        claim["bytes"], claim["entries"] = done.checked.size, len(done.source.entries)


BIND_TIMEOUT = 120.0


def _bound(kube: Kube, console: Console, path: str, name: str) -> Any:
    """The claim once its provisioner has bound it: this run has just created it, and a claim of an Immediate
    class is Pending until its volume exists (a pvc restore refuses a claim without a volume). A claim of a
    WaitForFirstConsumer class stays Pending on purpose: the pvc restore's own pod binds it."""
    from kubectl_dr.volumes.claims import binding_mode

    deadline = time.monotonic() + BIND_TIMEOUT
    said = False
    mode: str | None = None
    pause = pauses(0.5)  # a provisioner binds a claim within moments, as a rule
    while True:
        live = kube.get(path)
        spec, status = live.get("spec") or {}, live.get("status") or {}
        if (status.get("phase") == "Bound" and spec.get("volumeName")) or time.monotonic() > deadline:
            return live  # past the deadline the pvc restore says why the claim has no volume
        if not said:  # the class does not change while we wait: read it once
            mode = binding_mode(kube, spec.get("storageClassName"))
        if mode == "WaitForFirstConsumer":
            return live
        if not said:
            console.say(f"waiting for claim {name} to be bound by its provisioner")
            said = True
        time.sleep(next(pause))
