"""`kubectl dr etcd snapshot`: a snapshot of one member, moved and checked end to end, into the repository.

Pod path: a pod pinned to the member's node saves the snapshot with the member's own etcdctl (init
container, into an emptyDir); a helper container serves it. We ask the helper for the file's size and
SHA-256, stream it with `cat` over our exec layer into a repository part (which counts and hashes what it
writes), require the remote command's success and equal size and digest, and then read the database
with `verify_snapshot` before anything is committed. Direct path: the same from etcd3's Snapshot stream.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from kubectl_dr import cleanup, units
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.console import ProgressFactory, counted
from kubectl_dr.console import say_on_stderr as message
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.etcd import encryption, keyspace, podrun, podspec
from kubectl_dr.etcd.errors import EtcdError, MemberError, all_members_failed
from kubectl_dr.etcd.model import EndpointInfo
from kubectl_dr.etcd.snapshot_file import SnapshotStatus, verify_snapshot
from kubectl_dr.etcd.topology import Direct, Discovered, StaticMember
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import Timeouts, open_exec
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.kube.pods import HelperPod
from kubectl_dr.repo import BackupWriter, Manifest, PartWriter, Repository
from kubectl_dr.runs import Heartbeat, Lease, LeaseHeld, Run, lease_name
from kubectl_dr.runs.heartbeat import touch_pod
from kubectl_dr.runs.run import COMMAND_ANNOTATION, LEASE_ANNOTATION, RUN_ID_LABEL, Holder
from kubectl_dr.units import size

BACKUP_TYPE = "etcd-snapshot"
PART_NAME = "snapshot.db"
DEFAULT_HELPER_IMAGE = "busybox"
# Saving a multi-GB database runs inside the init container before the pod counts as running.
SAVE_TIMEOUT = 3600.0
# The lease every etcd restore holds (restore/job.py takes it under this name).
RESTORE_LEASE = lease_name("etcd", "restore")
_SHA256 = re.compile(r"^([0-9a-f]{64})\b")


@dataclass
class SnapshotResult:
    manifest: Manifest
    path: str  # the backup's location: a directory or s3://bucket/prefix/ID
    status: SnapshotStatus
    seconds: float

    repository: str = ""

    def to_dict(self) -> dict[str, Any]:
        # The keys every command's result uses: where (repository, location), how much (size in bytes), which
        # bytes (sha256) and how long (seconds).
        return {**self.manifest.to_dict(), "repository": self.repository, "location": self.path,
                "size": self.status.file_size, "sha256": self.status.sha256, "seconds": round(self.seconds, 3)}

    def columns(self) -> list[str]:
        return ["ID", "MEMBER", "NODE", "ETCD", "REVISION", "KEYS", "SIZE", "SHA256"]

    def rows(self) -> list[list[Any]]:
        member = self.manifest.details.get("member") or {}
        # Sizes as every table writes them (units.size); the digest's first 16 digits (the whole one in -o json).
        return [[self.manifest.id, member.get("name") or member.get("endpoint") or "-", member.get("node") or "-",
                 member.get("version") or "-", self.status.revision, self.status.total_keys,
                 size(self.status.file_size), self.status.sha256[:16]]]


def image_version(image: str) -> str | None:
    """registry.k8s.io/etcd:3.5.15-0 → 3.5.15 (kubeadm's tags are VERSION-N)."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = re.match(r"v?(\d+\.\d+\.\d+)", tag)
    return match.group(1) if match else None


def snapshot_details(status: SnapshotStatus, member: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
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
                       ) -> tuple[Manifest, SnapshotStatus]:
    try:
        status = verify_snapshot(part.path)
    except VerificationError as exc:
        raise MemberError(str(member.get("name") or member.get("endpoint")),
                          f"the snapshot from {member.get('node') or member.get('endpoint')} is not a good "
                          f"etcd snapshot: {exc.message}", hint=exc.hint) from None
    manifest = writer.commit(snapshot_details(status, member, details))
    return manifest, status


def _snapshot_identity(part: PartWriter, api: ClusterIdentity | None) -> ClusterIdentity | None:
    """The cluster a snapshot taken through --endpoints is of: the kube-system it holds."""
    try:
        uid = keyspace.kube_system_uid(keyspace.read(part.path))
    except DrError:
        uid = None  # a damaged file: the check before the commit says so in its own words
    if uid is None:
        message("warning: the snapshot holds no kube-system namespace: it records no cluster, so `--from latest` "
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


def via_pod(kube: Kube, topology: Discovered, repo: Repository, *, namespace: str, run: Run, node: str | None = None,
            helper_image: str = DEFAULT_HELPER_IMAGE, dry_run: str = "none",
            progress: ProgressFactory | None = None) -> SnapshotResult | SnapshotPlan:
    """From the given node's member, or the first member that works (Ready members first). ``progress``
    reports the copy (a snapshot of a large cluster takes a while to cross the exec stream)."""
    candidates = topology.candidates(node)
    refuse_during_restore(kube, namespace, run)
    dead = dead_snapshot_pods(kube, namespace, run)
    if dry_run != "none":
        if dry_run == "server":
            member = candidates[0]
            pods.create(kube, podspec.snapshot_pod(member, namespace, helper_image, run,
                                                   lease_name("etcd", member.name)), what="etcd snapshot",
                        dry_run="server")
        return SnapshotPlan(candidates, repo.location, dry_run, dead)
    for name in dead:
        message(f"deleting etcd snapshot pod {namespace}/{name} left behind by a run that is gone "
                "(it holds a copy of every Secret of the cluster)")
        pods.HelperPod(kube, namespace, name).delete(wait=True)
    failures: list[MemberError] = []
    for index, member in enumerate(candidates):
        try:
            return _from_member(kube, member, repo, namespace, helper_image, run, progress)
        except MemberError as exc:
            if exc.fatal or node is not None:
                raise
            failures.append(exc)
            if index + 1 < len(candidates):  # the last failure is the error itself
                message(f"warning: no snapshot from node {member.node}: {exc.message}")
    raise all_members_failed("etcd snapshot", failures)


def refuse_during_restore(kube: Kube, namespace: str, run: Run) -> None:
    """No snapshot while a restore holds its lease: it would capture the data the restore is replacing (or half
    of it), and become the newest backup that `--from latest` picks next."""
    lease = Lease(kube, namespace, RESTORE_LEASE, run, what="the etcd restore")
    obj = lease.read()
    if obj is None or lease.expired(obj):
        return
    who = Holder.parse(str((obj.get("spec") or {}).get("holderIdentity") or ""))
    command = ((obj.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
    raise EtcdError(f"an etcd restore is running: run {who.run_id or '(unknown)'} on host {who.host} "
                    f"(pid {who.pid}){f' ({command})' if command else ''} holds the lease {namespace}/{lease.name}; "
                    "a snapshot now would save the data it is replacing",
                    hint="See its state with `kubectl dr etcd restore status`, and take the snapshot once it has "
                         "finished. Nothing was changed.")


def dead_snapshot_pods(kube: Kube, namespace: str, run: Run) -> list[str]:
    """Snapshot pods of runs whose lease is gone (killed runs): they still hold a full snapshot."""
    data = kube.get(f"/api/v1/namespaces/{namespace}/pods",
                    labelSelector=f"{pods.LABEL_MANAGED}={pods.MANAGED_BY},{pods.LABEL_PURPOSE}=etcd-snapshot")
    dead = []
    for pod in data.get("items") or []:
        meta = pod.get("metadata") or {}
        run_id = (meta.get("labels") or {}).get(RUN_ID_LABEL)
        lease_of = (meta.get("annotations") or {}).get(LEASE_ANNOTATION)
        if run_id == run.id:
            continue
        if lease_of:
            lease = Lease(kube, namespace, lease_of, run, what=lease_of)
            obj = lease.read()
            if obj is not None and not lease.expired(obj) and Holder.parse(
                    str((obj.get("spec") or {}).get("holderIdentity") or "")).run_id == run_id:
                continue  # a live run's pod
        dead.append(str(meta.get("name")))
    return sorted(dead)


def _member_status(pod: HelperPod, member: StaticMember) -> dict[str, Any]:
    """What the member-status init container printed: ID, version, revision (best effort: logs only)."""
    info: dict[str, Any] = {"name": member.name, "node": member.node, "endpoint": member.client_url,
                            "image": member.image, "version": image_version(member.image)}
    for line in reversed(pod.logs(podspec.MEMBER_STATUS_INIT, tail_lines=50).splitlines()):
        if line.startswith("["):
            from kubectl_dr.etcd.etcdctl import parse_endpoint_status

            try:
                rows = parse_endpoint_status(line)
            except ValueError:
                break
            if rows:
                info.update(_endpoint_fields(rows[0]))
                info["clusterID"] = _cluster_id(line)
            break
    return info


def _endpoint_fields(row: EndpointInfo) -> dict[str, Any]:
    fields = {"id": row.member_id, "version": row.version, "revisionBefore": row.revision, "dbSize": row.db_size,
              "dbSizeInUse": row.db_size_in_use, "isLeader": row.is_leader, "raftTerm": row.raft_term}
    return {k: v for k, v in fields.items() if v is not None}


def _cluster_id(line: str) -> str | None:
    try:
        return f"{int(json.loads(line)[0]['Status']['header']['cluster_id']):x}"
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _remote_file(kube: Kube, pod: HelperPod, member: StaticMember) -> tuple[int, str]:
    """Size and SHA-256 of the saved file, computed in the helper container."""
    result, out = podrun.run(kube, pod, podspec.SERVE_CONTAINER, ["sha256sum", podspec.SNAPSHOT_FILE])
    result.check(f"sha256sum of the snapshot on node {member.node}")
    digest = _SHA256.match(out.decode(errors="replace").strip())
    result, size_out = podrun.run(kube, pod, podspec.SERVE_CONTAINER, ["wc", "-c", podspec.SNAPSHOT_FILE])
    result.check(f"wc -c of the snapshot on node {member.node}")
    fields = size_out.decode(errors="replace").split()
    if digest is None or not fields or not fields[0].isdigit():
        raise VerificationError(f"the helper container on node {member.node} printed an unexpected size or "
                                f"digest: {out[:200]!r} {size_out[:200]!r}",
                                hint="--helper-image needs sha256sum, wc and cat (busybox or coreutils).")
    return int(fields[0]), digest.group(1)


def _from_member(kube: Kube, member: StaticMember, repo: Repository, namespace: str,
                 helper_image: str, run: Run, progress: ProgressFactory | None = None) -> SnapshotResult:
    started = time.monotonic()
    lease = Lease(kube, namespace, lease_name("etcd", member.name), run, what=f"etcd member {member.name}")
    try:
        lease.acquire()
    except LeaseHeld as exc:
        raise MemberError(member.node, exc.message, hint=exc.hint) from None
    heartbeat = Heartbeat(message)
    heartbeat.hold(lease)
    stack = cleanup.current()
    steps = [stack.push(f"release the lease on etcd member {member.name}", lease.release),
             stack.push("stop the heartbeat", heartbeat.stop)]
    try:
        # Before the snapshot: the keys its Secrets were written with are the ones configured now.
        keys = encryption.read_for_snapshot(kube, member.node, namespace=namespace, run=run, helper_image=helper_image)
        message(f"saving a snapshot of the etcd member on node {member.node} ({member.client_url})")
        manifest = podspec.snapshot_pod(member, namespace, helper_image, run, lease.name)
        pod = podrun.start(kube, manifest, member, "etcd snapshot", helper_image=helper_image, timeout=SAVE_TIMEOUT)
        heartbeat.add(f"pod {pod.name}", lambda: _touch(kube, pod))
        pod.on_delete.append(lambda: heartbeat.remove(f"pod {pod.name}"))
        try:
            result = _copy(kube, pod, member, repo, helper_image, started, keys, progress)
        finally:
            pod.delete(wait=True)
    finally:
        for step in reversed(steps):
            stack.run(step)
    return result


def _touch(kube: Kube, pod: HelperPod) -> None:
    touch_pod(kube, pod.namespace, pod.name, podspec.SERVE_CONTAINER, podspec.ALIVE)


def _copy(kube: Kube, pod: HelperPod, member: StaticMember, repo: Repository, helper_image: str,
          started: float, keys: encryption.Fingerprint, progress: ProgressFactory | None = None) -> SnapshotResult:
    info = _member_status(pod, member)
    size, digest = _remote_file(kube, pod, member)
    message(f"copying {units.size(size)} from pod {pod.namespace}/{pod.name}")
    source = {"cluster": kube.resolved.server, "node": member.node, "member": member.name}
    cluster = identity_for_backup(kube, message)
    with repo.create(BACKUP_TYPE, source, name_hint=member.node, cluster=cluster) as writer:
        part = writer.open_part(PART_NAME, keep_local=True)
        copy_started = time.monotonic()
        # No idle limit beyond the default: cat sends as fast as we read.
        stream = open_exec(kube, pod.namespace, pod.name, ["cat", podspec.SNAPSHOT_FILE],
                           container=podspec.SERVE_CONTAINER, timeouts=Timeouts())
        with counted(part.write, progress, f"etcd snapshot {member.node}", size) as write:
            result = stream.run(stdout=write)
        written = part.close()
        try:
            result.check(f"streaming the snapshot from node {member.node}")
            _compare(member.node, size, digest, written.size, written.sha256)
        except VerificationError as exc:
            raise MemberError(member.node, exc.message, hint=exc.hint) from None
        copy_seconds = time.monotonic() - copy_started
        extra = {"mode": "pod", "server": kube.resolved.server, "pod": f"{pod.namespace}/{pod.name}",
                 "image": member.image, "helperImage": helper_image,
                 "transfer": {"bytes": written.size, "seconds": round(copy_seconds, 3),
                              "remoteSha256": digest, "remoteSize": size},
                 "encryption": keys.to_dict()}
        manifest_, status = _verify_and_commit(writer, part, extra, info)
        path = repo.backup_location(manifest_.id)
    return SnapshotResult(manifest_, path, status, time.monotonic() - started, repo.location)


def _compare(where: str, remote_size: int, remote_sha: str, size: int, sha: str) -> None:
    # busybox `wc -c` counts in 32 bits: past 4 GiB only the low bits are comparable. The SHA-256 of the
    # whole file, computed in the pod, is the proof either way.
    if size % 2**32 != remote_size % 2**32:
        raise VerificationError(f"snapshot transfer from {where} is incomplete: received {size} of {remote_size} "
                                "bytes")
    if sha != remote_sha:
        raise VerificationError(f"snapshot transfer from {where} is damaged: SHA-256 {sha} here, {remote_sha} in "
                                "the pod")


# ------------------------------------------------------------------------------------------ direct path
def direct(topology: Direct, repo: Repository, api: ClusterIdentity | None = None, *,
           details: dict[str, Any] | None = None, progress: ProgressFactory | None = None) -> SnapshotResult:
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
                member = {"name": name, "endpoint": url, "clusterID": cluster_id, **_endpoint_fields(info)}
                message(f"saving a snapshot of etcd member {name or info.member_id} at {url}")
                source = {"etcdCluster": cluster_id, "endpoint": url, "member": name}
                with repo.create(BACKUP_TYPE, source, name_hint=name or "etcd") as writer:
                    part = writer.open_part(PART_NAME, keep_local=True)
                    with counted(part.write, progress, f"etcd snapshot {name or url}", info.db_size) as write:
                        size = ep.snapshot(write)
                    written = part.close()
                    if written.size != size:
                        raise MemberError(url, f"wrote {written.size} of {size} bytes received from {url}")
                    writer.cluster = _snapshot_identity(part, api)
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
        message(f"warning: no snapshot from {url}: {failures[-1].message}")
    if len(failures) == 1:
        raise failures[0]
    raise all_members_failed("etcd snapshot", failures)

