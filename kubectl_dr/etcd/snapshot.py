"""`kubectl dr etcd snapshot`: a snapshot of one member, moved and checked end to end, into the repository.

Pod path: a pod pinned to the member's node saves the snapshot with the member's own etcdctl (into an
emptyDir) beside a helper container that serves it (snapshot_exposure.py: lease, pod, stream). One exec
streams the file while etcdctl writes it (snapshot_follow.py) into a repository part (which counts and hashes
what it writes) while the pod hashes it beside the stream; the remote command's success, equal size and
digest of the final file, and etcdctl's exit code 0 are required, and then the database is read with
`verify_snapshot` before anything is committed. Where the seconds went is recorded in the manifest
(`timings`). Direct path: the same from etcd3's Snapshot stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import units
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.console import Console, counted
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.etcd import encryption, keyspace, podspec
from kubectl_dr.etcd import snapshot_exposure as exposure
from kubectl_dr.etcd.errors import MemberError, all_members_failed
from kubectl_dr.etcd.snapshot_exposure import SnapshotExposure, compare, endpoint_fields
from kubectl_dr.etcd.snapshot_file import SnapshotStatus, StreamedHashes, verify_snapshot
from kubectl_dr.etcd.topology import Direct, Discovered, StaticMember
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.repo import BackupWriter, Manifest, PartWriter, Repository
from kubectl_dr.runs import Run, lease_name
from kubectl_dr.units import size

BACKUP_TYPE = "etcd-snapshot"
PART_NAME = "snapshot.db"
DEFAULT_HELPER_IMAGE = "busybox"


@dataclass
class SnapshotResult:
    manifest: Manifest
    path: str  # the backup's location: a directory or s3://bucket/prefix/ID
    status: SnapshotStatus
    seconds: float

    repository: str = ""
    copies: list[dict[str, Any]] = field(default_factory=list)  # --copy-to: where a copy went

    def to_dict(self) -> dict[str, Any]:
        # The keys every command's result uses: where (repository, location), how much (size in bytes), which
        # bytes (sha256) and how long (seconds).
        return {**self.manifest.to_dict(), "repository": self.repository, "location": self.path,
                "size": self.status.file_size, "sha256": self.status.sha256, "seconds": round(self.seconds, 3),
                **({"copies": self.copies} if self.copies else {})}

    def columns(self) -> list[str]:
        return ["ID", "MEMBER", "NODE", "ETCD", "REVISION", "KEYS", "SIZE", "SHA256"]

    def rows(self) -> list[list[Any]]:
        member = self.manifest.details.get("member") or {}
        # Sizes as every table writes them (units.size); the digest's first 16 digits (the whole one in -o json).
        return [[self.manifest.id, member.get("name") or member.get("endpoint") or "-", member.get("node") or "-",
                 member.get("version") or "-", self.status.revision, self.status.total_keys,
                 size(self.status.file_size), self.status.sha256[:16]]]


def manifest_details(status: SnapshotStatus, member: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "member": member,
        "etcdVersion": member.get("version"),
        "revision": status.revision,
        "totalKeys": status.total_keys,
        "totalSize": status.total_size,
        "hash": status.hash,
        "fileSize": status.file_size,
        "sha256": status.sha256,
        **extra,
    }


def _verify_and_commit(writer: BackupWriter, part: PartWriter, details: dict[str, Any], member: dict[str, Any],
                       timings: dict[str, float] | None = None,
                       streamed: StreamedHashes | None = None) -> tuple[Manifest, SnapshotStatus]:
    started = time.monotonic()
    try:
        status = verify_snapshot(part.path, streamed=(streamed, part.sha256) if streamed is not None else None)
    except VerificationError as exc:
        raise MemberError(str(member.get("name") or member.get("endpoint")),
                          f"the snapshot from {member.get('node') or member.get('endpoint')} is not a good "
                          f"etcd snapshot: {exc.message}", hint=exc.hint) from None
    if timings is not None:
        timings["verify (bbolt read)"] = round(time.monotonic() - started, 3)
    # Where the run's seconds went, step by step (read by benchmarks/etcd_snapshot.py); the dict is the run's
    # own, so the steps after the commit (the pod's deletion) do not appear in it.
    extra = {**details, **({"timings": dict(timings)} if timings else {})}
    manifest = writer.commit(manifest_details(status, member, extra))
    return manifest, status


def _snapshot_identity(part: PartWriter, api: ClusterIdentity | None, console: Console) -> ClusterIdentity | None:
    """The cluster a snapshot taken through --endpoints is of: the kube-system it holds."""
    try:
        uid = keyspace.kube_system_uid(keyspace.read(part.path, wanted=keyspace.is_kube_system_key))
    except DrError:
        uid = None  # a damaged file: the check before the commit says so in its own words
    if uid is None:
        console.warn("the snapshot holds no kube-system namespace: it records no cluster, so `--from latest` "
                "will not pick it; restore it by its ID")
        return None
    if api is not None and api.uid == uid:
        return api
    return ClusterIdentity(uid)


# --------------------------------------------------------------------------------------------- pod path
@dataclass
class SnapshotPlan:
    """A dry run: which member would be asked, from which node, into which repository."""

    members: list[StaticMember]
    repository: str
    dry_run: str
    leftovers: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "EtcdSnapshotPlan", "dryRun": self.dry_run, "repository": self.repository,
                "members": [m.to_dict() for m in self.members], "leftoverPods": self.leftovers,
                "podAcceptedByServer": self.dry_run == "server" or None}

    def summary(self) -> str:
        first = self.members[0]
        lines = [f"(dry run) would snapshot the etcd member {first.name} from a pod on node {first.node} "
                 f"(image {first.image}) into {self.repository}"]
        if len(self.members) > 1:
            lines.append(f"  if it fails, then: {', '.join(m.node for m in self.members[1:])}")
        if self.leftovers:
            lines.append(f"  delete snapshot pods of runs that are gone: {', '.join(self.leftovers)}")
        if self.dry_run == "server":
            lines.append("  the API server accepted the pod (nothing was persisted)")
        return "\n".join(lines) + "\n"


def via_pod(kube: Kube, console: Console, run: Run, topology: Discovered, repo: Repository, *, namespace: str,
            node: str | None = None, helper_image: str = DEFAULT_HELPER_IMAGE,
            dry_run: str = "none") -> SnapshotResult | SnapshotPlan:
    """From the given node's member, or the first member that works (Ready members first); the console's
    progress reports the copy (a snapshot of a large cluster takes a while to cross the exec stream). `run`:
    the command's run, which the lease and the pod name."""
    candidates = topology.candidates(node)
    exposure.refuse_during_restore(kube, namespace, run)
    dead = exposure.dead_snapshot_pods(kube, namespace, run)
    if dry_run != "none":
        if dry_run == "server":
            member = candidates[0]
            pods.create(kube, podspec.snapshot_pod(member, namespace, helper_image, run,
                                                   lease_name("etcd", member.name)), what="etcd snapshot",
                        dry_run="server")
        return SnapshotPlan(candidates, repo.location, dry_run, dead)
    sweep = exposure.sweep_in_background(kube, namespace, dead, console)
    try:
        failures: list[MemberError] = []
        for index, member in enumerate(candidates):
            try:
                started = time.monotonic()
                with SnapshotExposure(kube, member, namespace, run, helper_image, console) as exposed:
                    return _copy(kube, exposed, repo, started)
            except MemberError as exc:
                if exc.fatal or node is not None:
                    raise
                failures.append(exc)
                if index + 1 < len(candidates):  # the last failure is the error itself
                    console.warn(f"no snapshot from node {member.node}: {exc.message}")
        raise all_members_failed("etcd snapshot", failures)
    finally:
        if sweep is not None:
            sweep.join()


@contextmanager
def _stop_on_error(exposed: SnapshotExposure) -> Iterator[None]:
    """Inside the thread pool's block: on an error or Ctrl-C the threads' waits end before the pool waits for
    them."""
    try:
        yield
    except BaseException:
        exposed.stopping.set()
        raise


def _copy(kube: Kube, exposed: SnapshotExposure, repo: Repository, started: float) -> SnapshotResult:
    member, console = exposed.member, exposed.console
    console.say(f"saving a snapshot of the etcd member on node {member.node} ({member.client_url})")
    # The cluster's identity is read while the pod starts, the member's status while the backup is made, the
    # encryption config's copy while the snapshot streams (each its own request or exec): neither waits for the
    # other, nor the stream for more than the member's status (the progress's total; it has ended by the time
    # the pod runs, as a rule).
    with ThreadPoolExecutor(3) as pool, _stop_on_error(exposed):
        cluster = pool.submit(identity_for_backup, kube, console.say)
        pod = exposed.start()
        member_status = pool.submit(exposed.member_status)
        fingerprint = pool.submit(exposed.fingerprint)
        source = {"cluster": kube.resolved.server, "node": member.node, "member": member.name}
        with repo.create(BACKUP_TYPE, source, name_hint=member.node) as writer:
            part = writer.open_part(PART_NAME, keep_local=True)
            info = member_status.result()
            expected = info.get("dbSize")
            console.say(f"copying the snapshot from pod {pod.namespace}/{pod.name} while etcdctl saves it"
                        + (f" (about {units.size(int(expected))})" if isinstance(expected, int) else ""))
            copy_started = time.monotonic()
            hashes = StreamedHashes()  # the trailer's hash taken while the stream waits on the pod

            def keep(data: bytes) -> None:
                part.write(data)
                hashes.update(data)

            with counted(keep, console.progress, f"etcd snapshot {member.node}",
                         expected if isinstance(expected, int) else None) as write:
                served = exposed.stream(write)
            written = part.close()
            try:
                compare(member.node, served, written.size, written.sha256)
            except VerificationError as exc:
                raise MemberError(member.node, exc.message, hint=exc.hint) from None
            copy_seconds = time.monotonic() - copy_started
            keys = fingerprint.result()
            writer.cluster = cluster.result()
            extra = {"mode": "pod", "server": kube.resolved.server, "pod": f"{pod.namespace}/{pod.name}",
                     "image": member.image, "helperImage": exposed.helper_image,
                     "transfer": {"bytes": written.size, "seconds": round(copy_seconds, 3),
                                  "remoteSha256": served.remote_sha256, "remoteSize": served.remote_size},
                     "encryption": keys.to_dict()}
            manifest_, status = _verify_and_commit(writer, part, extra, info, exposed.timings, hashes)
            path = repo.backup_location(manifest_.id)
    return SnapshotResult(manifest_, path, status, time.monotonic() - started, repo.location)


# ------------------------------------------------------------------------------------------ direct path
def direct(topology: Direct, repo: Repository, console: Console, api: ClusterIdentity | None = None, *,
           details: dict[str, Any] | None = None) -> SnapshotResult:
    """From the first given endpoint that answers; each failure is reported and the next one tried.

    ``api``: the identity the API server shows, when it answers; the snapshot's own kube-system decides
    which cluster it is of, the API's server URL and context name are kept as hints when they agree.
    ``details`` go into the manifest as well (a restore's safety snapshot names its run).
    """
    from kubectl_dr.etcd.client import Endpoint, certificate_hint, is_rpc_error, rpc_error_text

    failures: list[MemberError] = []
    for url in topology.endpoints:
        started = time.monotonic()
        try:
            with Endpoint(url, topology) as ep:
                info = ep.status()
                cluster_id, members = ep.members()
                name = next((m.name for m in members if m.id == info.member_id), "")
                member = {"name": name, "endpoint": url, "clusterID": cluster_id, **endpoint_fields(info)}
                console.say(f"saving a snapshot of etcd member {name or info.member_id} at {url}")
                source = {"etcdCluster": cluster_id, "endpoint": url, "member": name}
                with repo.create(BACKUP_TYPE, source, name_hint=name or "etcd") as writer:
                    part = writer.open_part(PART_NAME, keep_local=True)
                    with counted(part.write, console.progress, f"etcd snapshot {name or url}", info.db_size) as write:
                        size = ep.snapshot(write)
                    written = part.close()
                    if written.size != size:
                        raise MemberError(url, f"wrote {written.size} of {size} bytes received from {url}")
                    writer.cluster = _snapshot_identity(part, api, console)
                    extra = {"mode": "direct", "endpoint": url,
                             "transfer": {"bytes": size, "seconds": round(time.monotonic() - started, 3)},
                             "encryption": encryption.Fingerprint(
                                 "unknown", "", reason="taken directly through --endpoints: the API servers' "
                                                       "encryption config was not read").to_dict(),
                             **(details or {})}
                    manifest, status = _verify_and_commit(writer, part, extra, member)
                    return SnapshotResult(manifest, repo.backup_location(manifest.id), status,
                                          time.monotonic() - started, repo.location)
        except MemberError as exc:
            failures.append(exc)
        except DrError:
            raise
        except Exception as exc:
            if not is_rpc_error(exc):
                raise
            text = rpc_error_text(exc)
            failures.append(MemberError(url, f"etcd at {url}: {text}", hint=certificate_hint(text)))
        console.warn(f"no snapshot from {url}: {failures[-1].message}")
    if len(failures) == 1:
        raise failures[0]
    raise all_members_failed("etcd snapshot", failures)

