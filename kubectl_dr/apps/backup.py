"""`namespace backup`: the objects of one or more namespaces and their claims' data, as one backup.

Order: discovery; --quiesce stops every consumer of the namespaces' claims (records on the objects,
undone on every path out); the objects are read and cleaned (what is left out is recorded with why);
each bound claim is backed up through the `pvc backup` job (its own checks: sizes, SHA-256, entry
record) and named in this backup's record; the objects and the record are written last, so an app
backup exists only when every claim it names was backed up.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.apps import OBJECTS_PART, RECORD_PART, TYPE
from kubectl_dr.apps.cleaning import ref
from kubectl_dr.apps.collect import Collected, Filters, check_filters, collect
from kubectl_dr.apps.resources import discover
from kubectl_dr.console import Console, Progress
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.repo import Manifest, Repository
from kubectl_dr.runs import Run
from kubectl_dr.session import Session
from kubectl_dr.units import count, duration, size
from kubectl_dr.workloads import records, scaling
from kubectl_dr.workloads.consumers import find_consumers

Json = dict[str, Any]
QUIESCE_TIMEOUT = 300.0
# Claims backed up side by side: each is a pod reading its volume and a stream through the API server;
# a few at once overlap pod start-up and checks without flooding the server or the repository.
CLAIMS_AT_ONCE = 3


@dataclass
class BackupOptions:
    namespaces: list[str]
    filters: Filters = field(default_factory=Filters)
    volumes: bool = True
    quiesce: bool = False
    name: str | None = None
    image: str | None = None
    parallel: int = CLAIMS_AT_ONCE


@dataclass
class BackupResult:
    manifest: Manifest | None
    collected: Collected
    claims: list[Json]
    dry_run: str = "none"

    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(str(o.get("kind")) for o in self.collected.objects).items()))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NamespaceBackup" if self.manifest else "NamespaceBackupPlan", "dryRun": self.dry_run,
                "id": self.manifest.id if self.manifest else None, "kinds": self.kinds(),
                "objects": len(self.collected.objects), "excluded": self.collected.excluded,
                "clusterScoped": self.collected.cluster_scoped, "claims": self.claims}

    def summary(self) -> str:
        c = self.collected
        head = (f"backup {self.manifest.id}: " if self.manifest else "(dry run) would back up ")
        lines = [f"{head}{count(len(c.objects), 'object')} "
                 f"({', '.join(f'{n} {k}' for k, n in self.kinds().items())}), "
                 f"{count(len(self.claims), 'claim')}"]
        for claim in self.claims:
            data = (f"{size(claim['size'])}, {count(claim['entries'], 'entry', 'entries')}, backup {claim['backup']}"
                    if claim.get("backup") else "data would be backed up")
            lines.append(f"  claim {claim['namespace']}/{claim['name']}: {data}")
        if c.cluster_scoped:
            lines.append(f"  cluster-scoped, restored only where missing: {', '.join(c.cluster_scoped)}")
        # One line per kind and reason: a namespace holds dozens of Events, each left out for the same reason
        # (-o yaml lists every object).
        grouped: dict[tuple[str, str], list[str]] = {}
        for item in c.excluded:
            kind = str(item["object"]).split("/", 1)[0]
            grouped.setdefault((kind, str(item["reason"])), []).append(str(item["object"]))
        for (kind, reason), names in grouped.items():
            what = names[0] if len(names) == 1 else f"{len(names)} {kind} objects"
            lines.append(f"  left out {what}: {reason}")
        return "\n".join(lines) + "\n"


def run(session: Session, repo: Repository, opts: BackupOptions) -> BackupResult:
    kube, console, run, dry_run = session.kube, session.console, session.run, session.dry_run
    catalog = discover(kube)
    check_filters(catalog, opts.filters)
    quiesced: list[scaling.ScaleRecord] = []
    try:
        if opts.quiesce and dry_run == "none":
            quiesced = _quiesce(kube, opts, console, run)
        collected = collect(kube, catalog, opts.namespaces, opts.filters)
        _as_before_scale_down(collected, run.id, console)
        console.say(f"read {count(len(collected.objects), 'object')} from {', '.join(opts.namespaces)}; "
                    f"{count(len(collected.excluded), 'object')} left out (the record says why)")
        if dry_run != "none":
            return BackupResult(None, collected, [dict(c) for c in collected.claims], dry_run)
        # The claims' backups are committed one by one; until the application backup that names them is, an
        # error or an interruption removes them: an unfinished backup keeps nothing in the repository.
        committed: list[str] = []
        stack = cleanup.current()
        undo = stack.push("remove the claims' backups of this unfinished namespace backup",
                          lambda: _forget(repo, committed, console))
        claims = _claims(session, repo, opts, collected, committed) if opts.volumes else []
        manifest = _write(kube, repo, opts, collected, claims, console)
        stack.discard(undo)
    finally:
        for record in reversed(quiesced):
            record.restore(console)
    return BackupResult(manifest, collected, claims)


def _quiesce(kube: Kube, opts: BackupOptions, console: Console, run: Run) -> list[scaling.ScaleRecord]:
    """Stop every consumer of every claim in the namespaces, for the whole backup (one moment)."""
    done: list[scaling.ScaleRecord] = []
    for namespace in opts.namespaces:
        claims = kube.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims").get("items") or []
        for claim in claims:
            consumers = find_consumers(kube, namespace, claim["metadata"]["name"])
            record = scaling.scale_down(kube, consumers, run_id=run.id, reason="namespace backup --quiesce",
                                        timeout=QUIESCE_TIMEOUT, console=console)
            done.append(record)
    return done


def _as_before_scale_down(collected: Collected, run_id: str, console: Console) -> None:
    """The objects as they run when kubectl dr is not holding them at 0: their recorded replicas, no record.

    This run's own --quiesce records silently. A record of another run means that run stopped the
    workload for a while and did not start it again (it was killed, or is still working): backed up at
    0 with that record, the app would be restored stopped for good, so it is backed up as recorded and
    the user is told the workload is still stopped here."""
    for obj in collected.objects:
        record = records.read_record(obj)
        if record is None:
            continue
        if record.run_id != run_id:
            meta = obj["metadata"]
            console.warn(f"{scaling.resource_name(str(obj.get('kind')))}/{meta['name']} -n {meta.get('namespace')} "
                         f"is held at 0 by run {record.run_id} ({record.reason}, since {record.at}), which did not "
                         f"start it again: backed up with its recorded {count(record.original_replicas, 'replica')}. "
                         f"{scaling.restore_hint(str(meta.get('namespace')))}")
        obj.setdefault("spec", {})["replicas"] = record.original_replicas
        annotations = obj["metadata"].get("annotations") or {}
        for key in records.ANNOTATIONS:
            annotations.pop(key, None)
        if not annotations:
            obj["metadata"].pop("annotations", None)


def _forget(repo: Repository, committed: list[str], console: Console) -> None:
    """Remove the claims' backups an unfinished namespace backup committed (each once)."""
    from kubectl_dr.repo import BackupNotFoundError

    while committed:
        backup_id = committed.pop()
        with contextlib.suppress(BackupNotFoundError):
            repo.delete(backup_id)
            console.say(f"removed backup {backup_id}: a claim's backup of this unfinished namespace backup")


def _claims(session: Session, repo: Repository, opts: BackupOptions, collected: Collected,
            committed: list[str]) -> list[Json]:
    """Every claim through `pvc backup`, up to ``opts.parallel`` side by side (each its own pod, lease and
    checks). A failure starts no further claim and waits for the ones under way, so that every pod they
    made is theirs to remove before the command's cleanup runs; then it is raised. An interruption (Ctrl-C)
    does not wait for them to finish: see `_stop`. Each claim's backup, once committed, goes into ``committed``."""
    claims = collected.claims
    workers = max(1, min(opts.parallel, len(claims)))
    if workers == 1:
        return [_claim(session, repo, opts, claim, committed) for claim in claims]
    shared = dataclasses.replace(session, console=_SideBySide(session.console))
    console = session.console
    console.say(f"backing up {count(len(claims), 'claim')}, {workers} at a time")
    pool = ThreadPoolExecutor(workers, "claim-backup")
    futures = [pool.submit(_claim, shared, repo, opts, claim, committed) for claim in claims]
    try:
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    except BaseException:
        for future in futures:
            future.cancel()  # the claims not started yet never start
        running = sum(1 for f in futures if f.running())
        if running:
            _stop(console, running)
        pool.shutdown(wait=True, cancel_futures=True)
        _forget(repo, committed, console)  # those committed after `_stop` ran the undo steps
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    return [f.result() for f in futures]  # the first failure, in the claims' order, is raised here


def _stop(console: Console, running: int) -> None:
    """Interrupted while claims are backed up side by side: their threads cannot be interrupted, and a claim of
    many gigabytes would hold the Ctrl-C for minutes. So the command's undo steps run now rather than once the
    threads end: their rescue pods are deleted (which cuts the streams, so each thread fails within moments),
    their consumers scaled back, their leases released. A step that fails goes back on the stack, for the
    command's own cleanup to try again and report."""
    console.say(f"stopping: removing the rescue pods of the {count(running, 'claim backup')} under way")
    stack = cleanup.current()
    for failure in stack.unwind(console.say):
        step = failure.step
        stack.push(step.description, step.action, fallback_hint=step.fallback_hint)


def _claim(session: Session, repo: Repository, opts: BackupOptions, claim: Json, committed: list[str]) -> Json:
    from kubectl_dr.volumes import backup as pvc_backup

    kwargs: dict[str, Any] = {"name": f"{opts.name or 'app'}-{claim['namespace']}-{claim['name']}"}
    if opts.image:
        kwargs["image"] = opts.image
    result = pvc_backup.run(session, repo, pvc_backup.BackupOptions(claim["namespace"], claim["name"], **kwargs))
    assert isinstance(result, pvc_backup.BackupResult)
    committed.append(result.manifest.id)
    part = result.manifest.part(pvc_backup.PART)
    entries = int((result.manifest.details.get("archive") or {}).get("entries") or 0)
    return {**claim, "backup": result.manifest.id, "size": part.size, "sha256": part.sha256, "entries": entries}


class _SideBySide:
    """The console of claim backups running side by side: one question at a time, and one live progress
    display at a time (a terminal holds one; the others say when they start and end instead)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._asking = threading.Lock()
        self._showing = threading.Lock()

    def say(self, text: str) -> None:
        self.console.say(text)

    def warn(self, text: str) -> None:
        self.console.warn(text)

    def confirm(self, question: str, *, reason: str = "", hint: str = "", prompt: str = "") -> None:
        with self._asking:
            self.console.confirm(question, reason=reason, hint=hint, prompt=prompt)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Progress]:
        if self._showing.acquire(blocking=False):
            try:
                with self.console.progress(description, total) as shown:
                    yield shown
            finally:
                self._showing.release()
            return
        quiet = _Counted()
        self.console.say(f"{description}: started")
        yield quiet
        self.console.say(f"{description}: {size(quiet.done)} in {duration(quiet.elapsed)} (done)")

    @property
    def is_interactive(self) -> bool:
        return self.console.is_interactive


class _Counted:
    """A progress that counts and shows nothing (another claim's progress has the display)."""

    def __init__(self) -> None:
        self.done = 0
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self._start, 1e-9)


def _write(kube: Kube, repo: Repository, opts: BackupOptions, collected: Collected, claims: list[Json],
           console: Console) -> Manifest:
    cluster = identity_for_backup(kube, console.warn)
    kinds = dict(sorted(Counter(str(o.get("kind")) for o in collected.objects).items()))
    source = {"namespaces": opts.namespaces, "server": kube.resolved.server, "context": kube.resolved.context_name,
              **({"selector": opts.filters.selector} if opts.filters.selector else {})}
    record = {"namespaces": opts.namespaces, "selector": opts.filters.selector,
              "includeResources": opts.filters.include, "excludeResources": opts.filters.exclude,
              "volumes": opts.volumes, "quiesced": opts.quiesce, "excluded": collected.excluded,
              "clusterScoped": collected.cluster_scoped, "claims": claims, "status": collected.status}
    # The manifest stays readable (listing, `backups show`): counts and names only, never an object.
    details = {"name": opts.name or ",".join(opts.namespaces), "kinds": kinds,
               "objects": len(collected.objects), "excluded": len(collected.excluded),
               "claims": [{k: c[k] for k in ("namespace", "name", "backup", "size", "entries")} for c in claims]}
    name_hint = opts.name or "-".join(opts.namespaces)
    with repo.create(TYPE, source, name_hint, cluster=cluster) as writer:
        # One object per line: readable with grep and `backups cat`, and written by json's C encoder (an
        # indent makes json fall back to its pure-Python encoder, ten times slower on a thousand objects).
        with writer.open_part(OBJECTS_PART) as part:
            part.write(("[\n" + ",\n".join(json.dumps(o, sort_keys=True) for o in collected.objects)
                        + "\n]\n").encode())
        with writer.open_part(RECORD_PART) as part:
            part.write(json.dumps(record, sort_keys=True).encode())
        manifest = writer.commit(details)
    console.say(f"wrote backup {manifest.id}: {count(len(collected.objects), 'object')}"
                f"{', ' + count(len(claims), 'claim') if claims else ''}")
    return manifest


__all__ = ["BackupOptions", "BackupResult", "ref", "run"]
