"""Create, list and delete our schedules: CronJobs labelled as kubectl dr's, and only those."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import ApiError, DrError, UsageError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.pods import LABEL_MANAGED, MANAGED_BY
from kubectl_dr.schedules import cron, etcd_job
from kubectl_dr.schedules.etcd_job import (
    DIR_ANNOTATION,
    KEEP_ANNOTATION,
    SCHEDULE_LABEL,
    WHAT_LABEL,
    EtcdScheduleSpec,
)
from kubectl_dr.session import Session

SELECTOR = f"{LABEL_MANAGED}={MANAGED_BY},{SCHEDULE_LABEL}"


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/batch/v1/namespaces/{namespace}/cronjobs"
    return f"{base}/{name}" if name else base


def is_ours(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_MANAGED) == MANAGED_BY and bool(labels.get(SCHEDULE_LABEL))


def _not_ours(namespace: str, name: str, action: str) -> DrError:
    return DrError(f'cronjob "{name}" in namespace {namespace} exists and is not a kubectl dr schedule (it lacks the '
                   f"label {LABEL_MANAGED}={MANAGED_BY}): not {action} it",
                   hint="Choose another name with --name, or manage that CronJob with kubectl.")


@dataclass
class Created:
    object: dict[str, Any]
    action: str  # created | replaced | (dry run) …
    dry_run: str
    note: str | None = None  # a client dry run's word on what the real run would meet (it changes nothing)
    spec: EtcdScheduleSpec | None = None  # what an etcd snapshot schedule was made of


def create_etcd_snapshot(session: Session, *, name: str, namespace: str, cron_expr: str, keep: int,
                         time_zone: str | None, nodes: tuple[str, ...], directory: str, helper_image: str,
                         replace: bool) -> Created:
    """An etcd snapshot schedule, checked (name, directory, time zone, --keep, the etcd members it may run on)
    before the CronJob is sent."""
    from kubectl_dr.etcd import topology
    from kubectl_dr.etcd.errors import TopologyError

    cron.parse(cron_expr)
    if time_zone is not None:
        cron.zone(time_zone)
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, not {keep}: the snapshot a run just made is always kept")
    etcd_job.check_name(name)
    etcd_job.check_directory(directory)
    kube = session.kube
    try:
        found = topology.discover(kube)
    except TopologyError as exc:
        exc.hint = ((exc.hint + "\n") if exc.hint else "") + (
            "A schedule runs on the etcd nodes and needs their static pods (kubeadm's layout). For an etcd this "
            "cluster does not run, put that command into cron on a machine that reaches it.")
        raise
    # Known only now: where this cluster's members keep their data (kubeadm's /var/lib/etcd is checked above).
    etcd_job.check_directory(directory, etcd_job.member_data_dirs(kube))
    members = etcd_job.members_for(found, nodes)
    spec = etcd_job.EtcdScheduleSpec(name=name, namespace=namespace, cron=cron_expr.strip(), keep=keep,
                                     time_zone=time_zone, nodes=tuple(m.node for m in members),
                                     directory=directory.rstrip("/") or "/", helper_image=helper_image)
    created = create(kube, etcd_job.cronjob(spec, members), replace=replace, dry_run=session.dry_run)
    created.spec = spec
    return created


def create(kube: Kube, manifest: dict[str, Any], *, replace: bool, dry_run: str) -> Created:
    """POST the CronJob (or PUT it over our own one with --replace); dry runs as kubectl does them."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    existing: dict[str, Any] | None
    try:
        existing = kube.get(_path(namespace, name))
    except ApiError as exc:
        if exc.status != 404:
            raise
        existing = None
    refusal = _refusal(existing, namespace, name, replace)
    if dry_run == "client":
        # kubectl's client dry run prints the object whatever the server holds: print it, and say what a real
        # run would meet.
        note = f"{refusal.message}: without --dry-run this would stop here. {refusal.hint}" if refusal else None
        return Created(manifest, "replaced" if existing and not refusal else "created", dry_run, note)
    if refusal:
        raise refusal
    query = {"dryRun": "All"} if dry_run == "server" else None
    query = {**(query or {}), "fieldValidation": "Strict"}
    if existing is not None:
        body = {**manifest, "metadata": {**manifest["metadata"],
                                         "resourceVersion": existing["metadata"]["resourceVersion"]}}
        obj = kube.request("PUT", _path(namespace, name), body=body, query=query)
        return Created(obj, "replaced", dry_run)
    obj = kube.request("POST", _path(namespace), body=manifest, query=query)
    return Created(obj, "created", dry_run)


def _refusal(existing: dict[str, Any] | None, namespace: str, name: str, replace: bool) -> DrError | None:
    """Why a CronJob of that name stops the create: not ours, or ours without --replace."""
    if existing is None:
        return None
    if not is_ours(existing):
        return _not_ours(namespace, name, "replacing")
    if not replace:
        return DrError(f'schedule "{name}" already exists in namespace {namespace}',
                       hint="Pass --replace to replace it with this one (its node-local snapshots stay), or "
                            "choose another --name.")
    return None


@dataclass
class ScheduleInfo:
    name: str
    namespace: str
    what: str
    cron: str
    time_zone: str | None
    keep: int | None
    directory: str | None
    nodes: list[str]
    suspended: bool
    active: int
    last_schedule: str | None
    last_success: str | None
    next_run: str | None
    last_job: JobResult | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "kind": self.what, "schedule": self.cron,
                "timeZone": self.time_zone, "keep": self.keep, "directory": self.directory, "nodes": self.nodes,
                "suspended": self.suspended, "active": self.active, "lastScheduleTime": self.last_schedule,
                "lastSuccessfulTime": self.last_success, "nextRun": self.next_run,
                "lastJob": self.last_job.to_dict() if self.last_job else None}


def _nodes(cj: dict[str, Any]) -> list[str]:
    job = ((cj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
    pod = (job.get("template") or {}).get("spec") or {}
    terms = (((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    return sorted({v for t in terms for e in t.get("matchExpressions") or []
                   if e.get("key") == "kubernetes.io/hostname" for v in e.get("values") or []})


def _parse(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class JobResult:
    """The newest Job of a schedule: Running, Succeeded or Failed (with the Job's reason and message)."""

    name: str
    result: str
    reason: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "result": self.result}
        if self.result == "Failed":
            out.update(reason=self.reason, message=self.message)
        return out


def _job_result(job: dict[str, Any]) -> JobResult:
    status = job.get("status") or {}
    state = "Running"
    for c in status.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            state = "Succeeded" if c["type"] == "Complete" else "Failed"
            if c["type"] == "Failed":
                return JobResult(job["metadata"]["name"], state, c.get("reason"), c.get("message"))
    return JobResult(job["metadata"]["name"], state)


def list_schedules(kube: Kube, namespace: str | None, now: dt.datetime | None = None) -> list[ScheduleInfo]:
    """Our CronJobs in ``namespace`` (None: every namespace), with their last and next runs."""
    path = _path(namespace) if namespace else "/apis/batch/v1/cronjobs"
    items = kube.get(path, labelSelector=SELECTOR).get("items") or []
    jobs_path = f"/apis/batch/v1/namespaces/{namespace}/jobs" if namespace else "/apis/batch/v1/jobs"
    jobs = kube.get(jobs_path, labelSelector=SELECTOR).get("items") or []
    moment = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for cj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        meta, spec, status = cj["metadata"], cj.get("spec") or {}, cj.get("status") or {}
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        last = _parse(status.get("lastScheduleTime"))
        after = max(last, moment) if last else moment
        upcoming = None if spec.get("suspend") else cron.next_run(str(spec.get("schedule", "")),
                                                                  spec.get("timeZone"), after)
        mine = [j for j in jobs if j["metadata"]["namespace"] == meta["namespace"]
                and (j["metadata"].get("labels") or {}).get(SCHEDULE_LABEL) == meta["name"]]
        newest = max(mine, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]),
                     default=None)
        keep = notes.get(KEEP_ANNOTATION)
        out.append(ScheduleInfo(
            name=meta["name"], namespace=meta["namespace"], what=labels.get(WHAT_LABEL, "?"),
            cron=str(spec.get("schedule", "")), time_zone=spec.get("timeZone"),
            keep=int(keep) if keep and keep.isdigit() else None, directory=notes.get(DIR_ANNOTATION),
            nodes=_nodes(cj), suspended=bool(spec.get("suspend")), active=len(status.get("active") or []),
            last_schedule=status.get("lastScheduleTime"), last_success=status.get("lastSuccessfulTime"),
            next_run=upcoming.strftime("%Y-%m-%dT%H:%M:%SZ") if upcoming else None,
            last_job=_job_result(newest) if newest else None,
        ))
    return out


@dataclass(frozen=True)
class Deleted:
    """A schedule deleted (or that would be): where its snapshots stay on the nodes."""

    name: str
    namespace: str
    dry_run: str
    snapshot_directory: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ScheduleDeleted", "name": self.name, "namespace": self.namespace, "dryRun": self.dry_run,
                "snapshotDirectory": self.snapshot_directory}


def delete(session: Session, namespace: str, name: str) -> Deleted:
    """Delete our CronJob (its Jobs and pods go with it) once the console's confirmation agrees; refuse
    anything else."""
    kube, dry_run = session.kube, session.dry_run
    try:
        obj: dict[str, Any] = kube.get(_path(namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            known = [s.name for s in list_schedules(kube, namespace)]
            raise DrError(f'schedule "{name}" not found in namespace {namespace}',
                          hint=(f"Schedules there: {', '.join(known)}." if known else
                                "There are no kubectl dr schedules there (kubectl dr schedule list -A shows all).")
                          ) from None
        raise
    if not is_ours(obj):
        raise _not_ours(namespace, name, "deleting")
    if dry_run == "none":
        session.console.confirm(f'delete schedule "{name}" in namespace {namespace} (the CronJob, its Jobs and '
                                "their pods)")
    if dry_run != "client":
        kube.request("DELETE", _path(namespace, name), body={"propagationPolicy": "Background"},
                     query={"dryRun": "All"} if dry_run == "server" else None)
    notes = (obj.get("metadata") or {}).get("annotations") or {}
    return Deleted(name, namespace, dry_run, notes.get(DIR_ANNOTATION))
