"""`kubectl dr etcd snapshot`: options → a plan (a dry run) or the snapshot, into a repository or a restic one.

The one entry of the snapshot, as restore/run.py is the restore's: the CLI parses, calls once and renders. It
opens the repository the CLI named and checks it (and every --copy-to target) before the cluster is touched,
resolves the members (--endpoints, else the static pods), checks what does not go with --endpoints, and takes
the snapshot through a pod on a member's node (snapshot.via_pod) or straight from the endpoints
(snapshot.direct), then copies it to the targets. With a restic repository the checked file is staged locally
and then stored there (restic_snapshot.take).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from typing import Any

from kubectl_dr import units
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.etcd import restic_snapshot
from kubectl_dr.etcd import snapshot as etcd_snapshot
from kubectl_dr.etcd import topology as etcd_topology
from kubectl_dr.etcd.restic_snapshot import ResticSnapshotResult
from kubectl_dr.etcd.snapshot import SnapshotPlan, SnapshotResult
from kubectl_dr.etcd.topology import Direct, Topology
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import LocalRepository, Repository
from kubectl_dr.repo.copies import copy_new, open_targets
from kubectl_dr.repo.ref import RepoRef
from kubectl_dr.repo.safety import confirm_plaintext_secrets
from kubectl_dr.session import Session


@dataclass(frozen=True)
class SnapshotOptions:
    """What `etcd snapshot` was asked, as plain values."""

    node: str | None = None
    helper_image: str = etcd_snapshot.DEFAULT_HELPER_IMAGE
    endpoints: list[str] | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    copy_to: tuple[str, ...] = ()  # --copy-to: repositories that get a copy once the snapshot is stored


@dataclass(frozen=True)
class DirectPlan:
    """A client dry run with --endpoints: nothing is asked of anyone, not even the endpoints."""

    repository: str
    endpoints: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdSnapshotPlan", "dryRun": "client", "repository": self.repository,
                "endpoints": list(self.endpoints)}

    def summary(self) -> str:
        return (f"(dry run) would stream a snapshot from the first of {', '.join(self.endpoints)} that answers "
                f"into {self.repository}\n")


Plan = SnapshotPlan | DirectPlan


def run(session: Session, where: RepoRef, opts: SnapshotOptions) -> SnapshotResult | ResticSnapshotResult | Plan:
    """The snapshot, verified end to end, into a repository (checked first, with its --copy-to targets, then
    copied to them) or a restic one (staged locally, then stored as a one-file restic snapshot); a dry run's plan."""
    if where.is_restic:
        if where.encrypt_to or opts.copy_to:
            raise UsageError("--copy-to and --encrypt-to do not apply to a restic repository (restic encrypts every "
                             "repository; restic copy copies snapshots)")
        return _into_restic(session, where, opts)
    if where.password_file:
        raise UsageError("--password-file applies to a restic repository (--repo restic:REPO)")
    repository = where.open()
    _check_repository(session, repository)
    targets = open_targets(list(opts.copy_to), repository, s3_endpoint=where.s3_endpoint,
                           azure_endpoint=where.azure_endpoint,
                           encrypt_to=None if where.encrypt_to is None else list(where.encrypt_to),
                           dry_run=session.dry_run, console=session.console, secret_what="an etcd snapshot")
    result = _take(session, repository, _members(session, opts), opts)
    if isinstance(result, SnapshotResult):
        session.console.say(f"snapshot {result.manifest.id} saved in {result.path} "
                            f"({units.duration(result.seconds)})")
        if targets:
            result = dataclasses.replace(result, copies=copy_new(repository, result.manifest.id, targets,
                                                                 session.console))
    return result


def _check_repository(session: Session, repository: Repository) -> None:
    """Before the cluster is touched (and before any --copy-to target is opened): the repository can take the
    snapshot, and an unencrypted remote one has the user's consent to hold every Secret."""
    repository.preflight(create=not session.dry)
    confirm_plaintext_secrets(repository, "an etcd snapshot", session.console)


def _into_restic(session: Session, where: RepoRef, opts: SnapshotOptions) -> ResticSnapshotResult | Plan:
    """A restic repository is opened (and may be created, after asking) once the members are known, as any
    repository is checked before the cluster is touched; a dry run opens nothing: a repository in the temporary
    directory stands in, and the plan names the restic one."""
    topo = _members(session, opts)
    if session.dry:
        planned = _take(session, LocalRepository(tempfile.gettempdir()), topo, opts, shown_as=where.restic_where())
        assert not isinstance(planned, SnapshotResult)
        return planned

    def create(place: str) -> bool:
        session.console.confirm(f"create a new restic repository at {place} (restic init)")
        return True

    restic = where.open_restic(create)

    def take(staging: Repository) -> SnapshotResult:
        result = _take(session, staging, topo, opts)
        assert isinstance(result, SnapshotResult)  # not a dry run
        return result

    result = restic_snapshot.take(restic, session.console, take)
    session.console.say(f"snapshot {result.snapshot.short_id} saved in {result.repository} "
                        f"({units.duration(result.taken.seconds)})")
    return result

def _members(session: Session, opts: SnapshotOptions) -> Topology:
    return etcd_topology.resolve(lambda: session.kube, opts.endpoints, opts.cacert, opts.cert, opts.key)


def _take(session: Session, repository: Repository, topo: Topology, opts: SnapshotOptions, *,
          shown_as: str | None = None) -> SnapshotResult | Plan:
    """`shown_as`: the repository a plan names (a restic repository, which the staging directory stands in for)."""
    where = shown_as or repository.location
    if isinstance(topo, Direct):
        if opts.node:
            raise UsageError("--node does not apply with --endpoints")
        if session.dry_run == "server":
            raise UsageError("--dry-run=server needs the API server; with --endpoints nothing goes through it "
                             "(use --dry-run=client)")
        # Only this branch needs the external restore's lease check (and its modules: ~10 ms of every pod-path
        # snapshot's start).
        from kubectl_dr.etcd.restore.external import refuse_snapshot_while_held

        refuse_snapshot_while_held(topo)
        if session.dry_run == "client":
            return DirectPlan(where, topo.endpoints)
        return etcd_snapshot.direct(topo, repository, session.console, _api_identity(session))
    planned = etcd_snapshot.via_pod(session.kube, session.console, session.run, topo, repository,
                                    namespace=etcd_topology.pod_namespace(session.namespace_flag), node=opts.node,
                                    helper_image=opts.helper_image,
                                    dry_run=session.dry_run)
    if isinstance(planned, SnapshotPlan):
        planned.repository = where
    return planned


def _api_identity(session: Session) -> ClusterIdentity | None:
    """The cluster the kubeconfig reaches, if it answers: a snapshot taken through --endpoints keeps its server
    and context as hints when the snapshot's own kube-system is this one."""
    try:
        return try_cluster_identity(session.kube)[0]
    except DrError:
        return None  # no kubeconfig, or the API is down: the snapshot itself says which cluster it is of
