"""`kubectl dr etcd restore`: options → a plan (a client dry run) or the outcome, stacked or external.

The one entry of the restore. It resolves the snapshot against the right cluster, then either
- a stacked etcd (members in static pods on the control-plane nodes): job.py stages and hands over to the nodes;
- an external etcd (`--endpoints`): external.py holds the API servers down and rewrites the keys through the
  client API; a run that stopped with the keys half rewritten (its API servers still held) is finished first.
Either way the break-glass runbook is written once the run holds the restore lease, and the kubelets are
restarted afterwards when asked for. The CLI renders what this returns.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubectl_dr.cleanup import UndoStep
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.etcd import keyspace
from kubectl_dr.etcd.restore import external, job
from kubectl_dr.etcd.restore.common import Outcome, restart_kubelets, take_lease
from kubectl_dr.etcd.restore.external import Etcd, ExternalPlan
from kubectl_dr.etcd.restore.holdscript import run_prefix
from kubectl_dr.etcd.restore.options import RestoreOptions
from kubectl_dr.etcd.restore.runbook import external_runbook, runbook
from kubectl_dr.etcd.restore.source import LocalSnapshot, local_snapshot, restic_snapshot
from kubectl_dr.etcd.snapshot import PART_NAME
from kubectl_dr.etcd.topology import Direct, resolve
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.nodes.kubelet_restart import COMMAND
from kubectl_dr.repo import Repository
from kubectl_dr.repo.ref import RepoRef
from kubectl_dr.session import Session

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository

RUNBOOK_NAME = "etcd-restore-runbook-{run}.sh"


@dataclass(frozen=True)
class RestorePlan:
    """A client dry run: what would be done, and the runbook that would be written before anything changes."""

    plan: job.Plan | ExternalPlan
    runbook: str
    runbook_path: Path
    restart_kubelets: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "dryRun": "client", "restartKubelets": self.restart_kubelets,
                "runbook": self.runbook}

    def summary(self) -> str:
        extra = (f"  then on every node (eight at a time): {' '.join(COMMAND)} (privileged hostPID pod)\n"
                 if self.restart_kubelets else "")
        return (self.plan.summary() + extra + f"(dry run) would write this break-glass runbook to "
                f"{self.runbook_path} (RUN: the real run's ID) before anything changes:\n\n" + self.runbook)


@dataclass(frozen=True)
class FinishPlan:
    """A client dry run while a run holds the API servers down with its rewrite unfinished."""

    run_id: str
    prefix: str
    snapshot: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdRestorePlan", "mode": "external", "finishes": self.run_id, "dryRun": "client"}

    def summary(self) -> str:
        return (f"(dry run) would finish the held run {self.run_id}: rewrite the keys under {self.prefix}/ to "
                f"{self.snapshot}'s, then release the API servers\n")


Result = Outcome | RestorePlan | FinishPlan


def run(session: Session, where: RepoRef, opts: RestoreOptions) -> Result:
    """The restore, verified before and after, from the repository `where` names. An outcome with `failure` set is
    a restore that stands with something after it failed (a kubelet restart): render it, then raise the failure."""
    direct = _direct(session, opts)
    repository, restic = _open(where, opts, direct)
    kube, console, run = session.kube, session.console, session.run
    if direct is None:
        snapshot = _snapshot(kube, repository, opts, console, None, restic)
        result: Result = _stacked(session, snapshot, opts)
    else:
        with external.etcd_errors(direct), Etcd(direct) as etcd:
            snapshot = _snapshot(kube, repository, opts, console, etcd, restic)
            result = _external(session, repository, snapshot, etcd, opts)
    if isinstance(result, Outcome) and opts.restart_kubelets:
        restart_kubelets(kube, opts.namespace, opts.helper_image, run, console, result)
    return result


def _direct(session: Session, opts: RestoreOptions) -> Direct | None:
    """--endpoints (checked before anything connects): an external etcd, reached from this machine."""
    if not opts.external:
        return None
    # Never connects: with --endpoints the members are those, and --cacert without them is refused.
    topo = resolve(lambda: session.kube, list(opts.endpoints or []), opts.cacert, opts.cert, opts.key)
    assert isinstance(topo, Direct)
    if opts.no_bump:
        raise UsageError("--no-bump-revision does not apply with --endpoints: a restore through the client API "
                         "always moves the revision forward")
    return topo


def _open(where: RepoRef, opts: RestoreOptions, direct: Direct | None) -> tuple[Repository, ResticRepository | None]:
    """The repository the snapshot comes from; with restic:REPO the restic one holds it, and the other (the
    default) is only where the runbook goes."""
    restic = None
    if where.is_restic:
        if direct is not None:
            raise UsageError("--repo restic:REPO does not go with --endpoints: an external etcd's restore keeps its "
                             "safety snapshot in a kubectl-dr repository",
                             hint=f"Copy the snapshot out first (restic -r REPO restore ID --target DIR) and give "
                                  f"--from DIR/{PART_NAME}.")
        if os.path.isfile(opts.source):
            raise UsageError(f"--from {opts.source} is a file here; with --repo restic:REPO give a snapshot ID or "
                             "latest")
        restic = where.open_restic()
        where = dataclasses.replace(where, repo=None)  # nothing else of the restore reads a repository
    elif where.password_file:
        raise UsageError("--password-file applies to a restic repository (--repo restic:REPO)")
    return where.open(), restic


def _snapshot(kube: Kube, repository: Repository, opts: RestoreOptions, console: Console,
              etcd: Etcd | None, restic: ResticRepository | None = None) -> LocalSnapshot:
    if restic is not None:  # `--from` names a snapshot of the restic repository, never a file
        current, why = _identity(kube, etcd)
        snapshot = restic_snapshot(opts.source, restic, console, current=current, unknown_why=why,
                                   from_cluster=opts.from_cluster, from_other_cluster=opts.from_other_cluster)
        console.say(f"snapshot {snapshot.describe()} verified: revision {snapshot.status.revision}, "
                    f"{snapshot.status.total_keys} keys, etcd {snapshot.version or 'unknown'}")
        return snapshot
    # A snapshot file names no cluster to choose among: the API is asked only for a backup of the repository.
    current, why = (None, "") if os.path.isfile(opts.source) else _identity(kube, etcd)
    snapshot = local_snapshot(opts.source, repository, console, current=current, unknown_why=why,
                              from_cluster=opts.from_cluster, from_other_cluster=opts.from_other_cluster,
                              record=opts.dry_run == "none")
    console.say(f"snapshot {snapshot.describe()} verified: revision {snapshot.status.revision}, "
                f"{snapshot.status.total_keys} keys, etcd {snapshot.version or 'unknown'}")
    return snapshot


def _identity(kube: Kube, etcd: Etcd | None) -> tuple[ClusterIdentity | None, str]:
    """The cluster `--from latest` resolves against: the API's answer, or with --endpoints while a held run
    keeps the API servers down, the kube-system stored in etcd itself (a rerun is made exactly then)."""
    try:
        return try_cluster_identity(kube)
    except DrError:
        uid = None if etcd is None else external.held_cluster_uid(etcd)
        if uid is None:
            raise
        return ClusterIdentity(uid), ""


def _stacked(session: Session, snapshot: LocalSnapshot, opts: RestoreOptions) -> Result:
    console = session.console
    plan = job.plan(session, snapshot, opts)
    book = runbook(plan)
    if opts.client_dry_run:
        return RestorePlan(plan, book, _runbook_path(snapshot, "RUN"), opts.restart_kubelets)
    if not plan.bump:
        console.warn(job.NO_BUMP_RISK)
    console.confirm(f"restore etcd on {', '.join(t.node for t in plan.targets)} from {snapshot.describe()}: every "
                    "API server stops for the duration, and everything written since the snapshot is set aside")
    lease = _hold_lease(session, opts.namespace, book, snapshot)
    return job.run(session, plan, book, lease, rerun=rerun(session, snapshot))


def _external(session: Session, repository: Repository, snapshot: LocalSnapshot, etcd: Etcd,
              opts: RestoreOptions) -> Result:
    console = session.console
    etcd.check()  # every endpoint answers, as one cluster: said plainly before anything else
    held = external.held_runs(etcd)
    if held:
        return _finish_held(session, snapshot, etcd, held[0], opts)
    plan = external.plan(session, etcd, snapshot, opts)
    book = external_runbook(plan)
    if opts.client_dry_run:
        return RestorePlan(plan, book, _runbook_path(snapshot, "RUN"), opts.restart_kubelets)
    console.confirm(f"restore the external etcd {plan.cluster_id} from {snapshot.describe()}: every API server "
                    f"stops for the duration; {plan.to_put} key(s) are written and {plan.to_delete} deleted")

    lease = _hold_lease(session, plan.namespace, book, snapshot)
    outcome = external.run(session, plan, etcd, lease, repository,
                           rerun=external.Rerun(rerun(session, snapshot),
                                                rerun(session, snapshot, hold_timeout=2 * opts.hold_timeout)))
    outcome.runbook = book
    return outcome


def _finish_held(session: Session, snapshot: LocalSnapshot, etcd: Etcd, held: str, opts: RestoreOptions) -> Result:
    """The API servers are down because of that run: finish it from here, through etcd alone."""
    console = session.console
    prefix = (etcd.get(f"{run_prefix(held)}/prefix".encode()) or b"/registry").decode()
    external.check_bound(etcd, held, snapshot, opts.source)
    if opts.client_dry_run:
        return FinishPlan(held, prefix, snapshot.describe())
    space = keyspace.read(snapshot.path).under(prefix.encode() + b"/")
    console.confirm(f"run {held} stopped with the keys half rewritten and the API servers held down: "
                    f"rewrite them to {snapshot.describe()} and start the API servers")
    return external.resume(session, etcd, held, space, prefix, opts.namespace, rerun(session, snapshot))


def rerun(session: Session, snapshot: LocalSnapshot, *, hold_timeout: int | None = None) -> str:
    """This restore as the command to paste: the user's own, with the snapshot pinned by its ID (a `latest` could
    name a newer snapshot by then, and --from-cluster only chooses one for `latest`), and no --dry-run."""
    return command_line(session, snapshot.backup_id, snapshot.path, hold_timeout=hold_timeout)


def command_line(session: Session, backup_id: str | None, path: Path, *, hold_timeout: int | None = None) -> str:
    """`rerun` for a snapshot that is backup `backup_id` (None: the file at `path`)."""
    pinned = [] if backup_id is None else ["--from", backup_id]
    drop = ["--dry-run", *(["--from", "--from-cluster"] if pinned else []),
            *(["--hold-timeout"] if hold_timeout is not None else [])]
    add = [*pinned, *(["--hold-timeout", str(hold_timeout)] if hold_timeout is not None else [])]
    return session.command_line(drop=drop, add=add,
                                default=["etcd", "restore", *(pinned or ["--from", str(path)])])


def _hold_lease(session: Session, namespace: str, book: str, snapshot: LocalSnapshot) -> UndoStep:
    """The one restore lease, then the runbook: a run refused before that (confirmation, lease, preflight) leaves
    no runbook of a restore that never ran. The job runs the returned release before the API servers stop."""
    lease = take_lease(session.kube, namespace, session.run, session.console)
    _write_runbook(session.console, book, snapshot, session.run.id)
    return lease


def _runbook_path(snapshot: LocalSnapshot, run_id: str) -> Path:
    return snapshot.runbook_dir / RUNBOOK_NAME.format(run=run_id)


def _write_runbook(console: Console, book: str, snapshot: LocalSnapshot, run_id: str) -> None:
    """Beside the backup, and on stderr, once the run holds the restore lease and before it changes anything: a
    run refused before that (confirmation, lease, preflight) leaves no runbook of a restore that never ran."""
    path = _runbook_path(snapshot, run_id)
    try:
        path.write_text(book)
        console.say(f"break-glass runbook written to {path}")
    except OSError as exc:
        console.warn(f"cannot write the runbook to {path} ({exc.strerror}); it follows on stderr")
    console.say(book)
