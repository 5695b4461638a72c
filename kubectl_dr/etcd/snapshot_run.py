"""`kubectl dr etcd snapshot`: options → a plan (a dry run) or the snapshot, into a repository or a restic one.

The one entry of the snapshot, as restore/run.py is the restore's: the CLI parses, calls once and renders. It
resolves the members (--endpoints, else the static pods), checks what does not go with --endpoints, and takes
the snapshot through a pod on a member's node (snapshot.via_pod) or straight from the endpoints
(snapshot.direct). With a restic repository the checked file is staged locally and then stored there
(restic_snapshot.take).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.etcd import restic_snapshot
from kubectl_dr.etcd import snapshot as etcd_snapshot
from kubectl_dr.etcd import topology as etcd_topology
from kubectl_dr.etcd.restic_snapshot import ResticSnapshotResult
from kubectl_dr.etcd.restore.external import refuse_snapshot_while_held
from kubectl_dr.etcd.snapshot import SnapshotPlan, SnapshotResult
from kubectl_dr.etcd.topology import Direct, Topology
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import LocalRepository, Repository
from kubectl_dr.repo.safety import confirm_plaintext_secrets
from kubectl_dr.session import Session

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository


@dataclass(frozen=True)
class SnapshotOptions:
    """What `etcd snapshot` was asked, as plain values."""

    namespace: str  # of the helper pod (kube-system unless -n)
    node: str | None = None
    helper_image: str = etcd_snapshot.DEFAULT_HELPER_IMAGE
    endpoints: list[str] | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


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


def check_repository(session: Session, repository: Repository) -> None:
    """Before the cluster is touched (and before any --copy-to target is opened): the repository can take the
    snapshot, and an unencrypted remote one has the user's consent to hold every Secret."""
    repository.preflight(create=not session.dry)
    confirm_plaintext_secrets(repository, "an etcd snapshot", session.console)


@dataclass(frozen=True)
class Restic:
    """A restic repository as the snapshot's destination: `where` names it (what a dry run's plan shows), `open`
    opens it (and may ask to create one) once the members are known, as for any repository. Both only when
    needed: a dry run opens nothing."""

    where: Callable[[], str]
    open: Callable[[], ResticRepository]


def run(session: Session, into: Repository | Restic,
        opts: SnapshotOptions) -> SnapshotResult | ResticSnapshotResult | Plan:
    """The snapshot, verified end to end, into a repository (checked first: check_repository) or a restic one
    (staged locally, then stored as a one-file restic snapshot); a dry run's plan."""
    topo = _members(session, opts)
    if not isinstance(into, Restic):
        return _take(session, into, topo, opts)
    if session.dry:  # nothing is opened or written: a repository in the temporary directory stands in
        return _take(session, LocalRepository(tempfile.gettempdir()), topo, opts, shown_as=into.where())
    restic = into.open()

    def take(staging: Repository) -> SnapshotResult:
        result = _take(session, staging, topo, opts)
        assert isinstance(result, SnapshotResult)  # not a dry run
        return result

    return restic_snapshot.take(restic, session.console, take)


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
        refuse_snapshot_while_held(topo)
        if session.dry_run == "client":
            return DirectPlan(where, topo.endpoints)
        return etcd_snapshot.direct(topo, repository, session.console, _api_identity(session))
    planned = etcd_snapshot.via_pod(session.kube, session.console, session.run, topo, repository,
                                    namespace=opts.namespace, node=opts.node, helper_image=opts.helper_image,
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
