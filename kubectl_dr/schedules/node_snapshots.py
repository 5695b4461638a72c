"""The snapshots our schedules left on the etcd nodes: listed, and pulled into a repository, verified.

Each node is read through one short-lived busybox pod pinned to it (`nodeName`), which mounts the snapshot
directory read-only and nothing else, carries no service-account token, and ends by itself when the run
that made it stops touching it (or at its activeDeadlineSeconds). Listing reads the sidecars and the
sizes of the files; a snapshot counts only when its sidecar is there and its file has the recorded size.

A pull copies every snapshot the repository does not hold yet (by SHA-256: a second pull copies nothing),
oldest first, each checked three times before it is committed: the file on the node still hashes to what
its sidecar recorded (SHA-256 computed in the pod), the bytes received have that size and SHA-256, and the
database reads as a sound etcd snapshot here (`verify_snapshot`: size rule, SHA-256 trailer, every bbolt
page) with the revision the node recorded. The backup is an `etcd-snapshot` like the ones `kubectl dr etcd
snapshot` writes (same source and details), so list, verify, prune and restore treat both alike; its time
is when the node took it. One pull per repository at a time (a Lease), since two would copy twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup, units
from kubectl_dr.console import Console, counted
from kubectl_dr.errors import VerificationError
from kubectl_dr.etcd.snapshot import BACKUP_TYPE, PART_NAME, SnapshotResult, manifest_details
from kubectl_dr.etcd.snapshot_exposure import image_version
from kubectl_dr.etcd.snapshot_file import verify_snapshot
from kubectl_dr.etcd.topology import Discovered
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import Timeouts, open_exec
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.repo import Repository
from kubectl_dr.runs import Heartbeat, Lease, Run, lease_name
from kubectl_dr.runs.heartbeat import pod_grace_seconds
from kubectl_dr.schedules import scripts
from kubectl_dr.session import Session

READER_PURPOSE = "etcd-snapshots-reader"
MOUNT = "/snapshots"
ALIVE_DIR = "/alive"
READER_DEADLINE_SECONDS = 4 * 3600
READER_CONTAINER = "reader"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.db$")


@dataclass
class NodeSnapshot:
    node: str
    directory: str
    file: str
    size: int | None
    sha256: str | None = None
    taken_at: str | None = None
    schedule: str | None = None
    revision: int | None = None
    total_keys: int | None = None
    member_id: str | None = None
    cluster_id: str | None = None
    etcdctl_version: str | None = None
    image: str | None = None
    checks: list[str] = field(default_factory=list)
    problem: str | None = None  # set: not a complete snapshot (never pulled)
    in_repository: str | None = None  # the backup ID that holds it, if any

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.file}"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "directory": self.directory, "file": self.file, "path": self.path,
                "size": self.size, "sha256": self.sha256, "takenAt": self.taken_at, "schedule": self.schedule,
                "revision": self.revision, "totalKeys": self.total_keys, "memberID": self.member_id,
                "clusterID": self.cluster_id, "etcdctlVersion": self.etcdctl_version, "image": self.image,
                "checks": self.checks, "complete": self.complete, "problem": self.problem,
                "inRepository": self.in_repository}


@dataclass
class NodeListing:
    snapshots: list[NodeSnapshot]
    missing: list[tuple[str, str]]  # (node, directory) without that directory
    unreachable: list[tuple[str, str, str]] = field(default_factory=list)  # (node, directory, why)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NodeEtcdSnapshotList", "items": [s.to_dict() for s in self.snapshots],
                "missingDirectories": [{"node": n, "directory": d} for n, d in self.missing],
                "unreadable": [{"node": n, "directory": d, "reason": r} for n, d, r in self.unreachable]}


# ------------------------------------------------------------------------------------------ the pods
def reader_pod(node: str, directory: str, namespace: str, run: Run, image: str) -> dict[str, Any]:
    grace = pod_grace_seconds()
    # Ends itself once nobody touched the alive file for `grace` seconds (a killed run leaves nothing).
    script = (f"touch {ALIVE_DIR}/beat\nwhile :; do\n  age=$(( $(date +%s) - $(stat -c %Y {ALIVE_DIR}/beat) ))\n"
              f"  [ \"$age\" -lt {grace} ] || exit 0\n  sleep 2 & wait $!\ndone\n")
    return pods.pod_manifest(
        pods.pod_name("dr-etcd-snapshots", node), namespace, purpose=READER_PURPOSE, node=node,
        deadline=READER_DEADLINE_SECONDS, labels=run.labels(), annotations=run.annotations(),
        volumes=[pods.host_path_volume("snapshots", directory), {"name": "alive", "emptyDir": {}}],
        containers=[{"name": READER_CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", script],
                     "volumeMounts": [{"name": "snapshots", "mountPath": MOUNT, "readOnly": True},
                                      {"name": "alive", "mountPath": ALIVE_DIR}]}])


@dataclass
class Reader:
    node: str
    directory: str
    pod: pods.HelperPod


class Readers:
    """One reader pod per (node, directory), started together, removed however the command ends."""

    def __init__(self, session: Session, namespace: str, image: str) -> None:
        self.kube, self.namespace, self.run, self.image = session.kube, namespace, session.run, image
        self.console = session.console
        self.readers: list[Reader] = []
        self.missing: list[tuple[str, str]] = []
        self.unreachable: list[tuple[str, str, pods.PodStartError]] = []
        self.heartbeat = Heartbeat(self.console.warn)

    def start(self, places: list[tuple[str, str]]) -> None:
        started = [(node, d, pods.create(self.kube, reader_pod(node, d, self.namespace, self.run, self.image),
                                         what="etcd snapshots reader")) for node, d in places]
        for node, directory, pod in started:
            try:
                pods.wait_running(pod, timeout=180, stuck_after=8, progress=self._unless_no_directory)
            except _NoDirectory:
                # No schedule has written there yet: the normal first state, not the kubelet's failure to report.
                pod.delete(wait=True, timeout=60)
                self.missing.append((node, directory))
                continue
            except pods.PodStartError as exc:
                pod.delete(wait=True, timeout=60)
                if _no_directory(exc.message):
                    self.missing.append((node, directory))
                    continue
                # A node that is down must not keep the others' snapshots from being read: that is when
                # they matter most. Said, recorded, and fatal only when no node could be read at all.
                self.console.warn(f"cannot read {directory} on node {node}: {exc.message}")
                self.unreachable.append((node, directory, exc))
                continue
            self.heartbeat.add(f"pod {pod.name}", _toucher(self.kube, pod))
            self.readers.append(Reader(node, directory, pod))
        if self.unreachable and not self.readers:
            raise self.unreachable[0][2]

    def _unless_no_directory(self, text: str) -> None:
        """Progress, except the kubelet's FailedMount for a directory no schedule has made yet: that ends the
        wait."""
        if _no_directory(text):
            raise _NoDirectory(text)
        self.console.say(text)

    def close(self) -> None:
        self.heartbeat.stop()
        for reader in self.readers:
            reader.pod.delete(wait=True, timeout=60)


class _NoDirectory(Exception):
    """The kubelet said the snapshot directory is not there: known at once, no need to wait for more."""


def _no_directory(text: str) -> bool:
    return "hostPath type check failed" in text and "is not a directory" in text


def _toucher(kube: Kube, pod: pods.HelperPod) -> Callable[[], None]:
    return lambda: _touch(kube, pod)


def _touch(kube: Kube, pod: pods.HelperPod) -> None:
    open_exec(kube, pod.namespace, pod.name, ["touch", f"{ALIVE_DIR}/beat"], container=READER_CONTAINER,
              timeouts=Timeouts(connect=10.0, idle=30.0)).run().check(f"heartbeat of pod {pod.name}")


def _run(kube: Kube, pod: pods.HelperPod, command: list[str], what: str) -> bytes:
    out = bytearray()
    result = open_exec(kube, pod.namespace, pod.name, command, container=READER_CONTAINER).run(stdout=out.extend)
    result.check(what)
    return bytes(out)


# ---------------------------------------------------------------------------------------- listing
_LIST_SCRIPT = f"""\
cd {MOUNT} || exit 3
for f in *.json; do [ -f "$f" ] || continue; echo "@@json $f"; head -c 65536 "$f"; echo; done
for f in *.db; do [ -f "$f" ] || continue; echo "@@db $f $(stat -c %s "$f")"; done
"""


def _hex(value: Any) -> str | None:
    return f"{int(value):x}" if isinstance(value, int) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_listing(node: str, directory: str, text: str) -> list[NodeSnapshot]:
    """What the listing script printed → snapshots (complete ones, and the others with their problem)."""
    sidecars: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    current: str | None = None
    body: list[str] = []

    def flush() -> None:
        if current is not None:
            raw = "\n".join(body).strip()
            try:
                sidecars[current] = json.loads(raw)
            except ValueError:
                sidecars[current] = None
    for line in text.splitlines():
        if line.startswith("@@json "):
            flush()
            current, body = line[len("@@json "):], []
        elif line.startswith("@@db "):
            flush()
            current = None
            parts = line.split(" ")
            if len(parts) == 3 and parts[2].isdigit():
                sizes[parts[1]] = int(parts[2])
        elif current is not None:
            body.append(line)
    flush()
    out: list[NodeSnapshot] = []
    described: set[str] = set()
    for name, data in sidecars.items():
        if not isinstance(data, dict) or data.get("kind") != scripts.SIDECAR_KIND:
            if data is None and name.endswith(".json") and name[:-5] + ".db" in sizes:
                described.add(name[:-5] + ".db")
                out.append(NodeSnapshot(node, directory, name[:-5] + ".db", sizes[name[:-5] + ".db"],
                                        problem=f"its sidecar {name} is not valid JSON"))
            continue
        file = str(data.get("file") or "")
        snap = NodeSnapshot(
            node=node, directory=directory, file=file, size=_int(data.get("size")),
            sha256=str(data.get("sha256") or "") or None, taken_at=data.get("takenAt"),
            schedule=data.get("schedule"), revision=_int(data.get("revision")),
            total_keys=_int(data.get("totalKeys")), member_id=_hex(data.get("memberID")),
            cluster_id=_hex(data.get("clusterID")), etcdctl_version=data.get("etcdctlVersion"),
            image=data.get("image"), checks=[str(c) for c in data.get("checks") or []],
        )
        described.add(file)
        if not _SAFE_FILE.match(file):
            snap.problem = f"its sidecar {name} names an unexpected file {file!r}"
        elif file not in sizes:
            snap.problem = f"{file} is missing (removed by hand, or by retention while we looked)"
        elif snap.size is None or not snap.sha256 or not _SHA256.match(snap.sha256):
            snap.problem = f"its sidecar {name} lacks a size or SHA-256"
        elif sizes[file] != snap.size:
            snap.problem = f"{file} is {sizes[file]} bytes, its sidecar says {snap.size}"
        out.append(snap)
    for file, size in sizes.items():
        if file not in described:
            out.append(NodeSnapshot(node, directory, file, size,
                                    problem="no sidecar: incomplete (a run that did not finish), or not ours"))
    return out


def _places(topology: Discovered, nodes: list[str] | None, directories: list[str]) -> list[tuple[str, str]]:
    chosen = [topology.member(n).node for n in nodes] if nodes else [m.node for m in topology.members]
    return [(n, d) for n in chosen for d in directories]


def read_all(readers: Readers) -> list[NodeSnapshot]:
    found: list[NodeSnapshot] = []
    for reader in readers.readers:
        text = _run(readers.kube, reader.pod, ["sh", "-c", _LIST_SCRIPT],
                    f"listing {reader.directory} on node {reader.node}").decode(errors="replace")
        found += parse_listing(reader.node, reader.directory, text)
    found.sort(key=lambda s: (s.taken_at or "", s.node, s.file), reverse=True)
    return found


def _known(repo: Repository) -> dict[str, str]:
    """SHA-256 of every etcd snapshot the repository holds → its backup ID."""
    out: dict[str, str] = {}
    for manifest in repo.list(type=BACKUP_TYPE):
        sha = manifest.details.get("sha256")
        if isinstance(sha, str):
            out.setdefault(sha, manifest.id)
    return out


def list_snapshots(session: Session, topology: Discovered, *, namespace: str, directories: list[str],
                   nodes: list[str] | None, image: str, repo: Repository | None = None) -> NodeListing:
    readers = Readers(session, namespace, image)
    step = cleanup.current().push("delete the reader pods", readers.close)
    try:
        readers.start(_places(topology, nodes, directories))
        found = read_all(readers)
    finally:
        cleanup.current().run(step)
    if repo is not None:
        known = _known(repo)
        for snap in found:
            snap.in_repository = known.get(snap.sha256 or "")
    return NodeListing(found, readers.missing, [(n, d, e.message) for n, d, e in readers.unreachable])


# ------------------------------------------------------------------------------------------- pulling
@dataclass
class PullResult:
    repository: str
    pulled: list[SnapshotResult] = field(default_factory=list)
    already: list[tuple[NodeSnapshot, str]] = field(default_factory=list)  # (snapshot, backup ID)
    incomplete: list[NodeSnapshot] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    vanished: list[NodeSnapshot] = field(default_factory=list)  # removed by retention while we pulled
    unreachable: list[tuple[str, str, str]] = field(default_factory=list)  # (node, directory, why)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NodeEtcdSnapshotPull", "repository": self.repository,
                "pulled": [{"node": r.manifest.source.get("node"),
                            "file": r.manifest.details.get("nodeFile"), **r.to_dict()} for r in self.pulled],
                "alreadyInRepository": [{"node": s.node, "path": s.path, "id": i} for s, i in self.already],
                "skippedIncomplete": [s.to_dict() for s in self.incomplete],
                "removedMeanwhile": [{"node": s.node, "path": s.path} for s in self.vanished],
                "unreadable": [{"node": n, "directory": d, "reason": r} for n, d, r in self.unreachable],
                "missingDirectories": [{"node": n, "directory": d} for n, d in self.missing]}


def pull_lease_name(repo: Repository | str) -> str:
    location = repo if isinstance(repo, str) else repo.location
    return lease_name("etcd-pull", hashlib.sha256(location.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Destination:
    """Where pulled snapshots end up when `repo` is only their staging place (a restic repository): its
    name (the lease is per destination), the SHA-256s it holds already, and how one checked snapshot is
    handed over (returns the ID it has there)."""

    location: str
    known: dict[str, str]
    keep: Callable[[SnapshotResult], str]


def pull(session: Session, topology: Discovered, repo: Repository, *, namespace: str, directories: list[str],
         nodes: list[str] | None, image: str, destination: Destination | None = None) -> PullResult:
    kube, console = session.kube, session.console
    where = destination.location if destination else repo.location
    lease = Lease(kube, namespace, pull_lease_name(where), session.run, what=f"pulls into {where}")
    lease.acquire()  # LeaseHeld names the other pull's host, pid and run
    stack = cleanup.current()
    release = stack.push(f"release the lease {lease.name}", lease.release)
    readers = Readers(session, namespace, image)
    readers.heartbeat.hold(lease)
    step = stack.push("delete the reader pods", readers.close)
    try:
        readers.start(_places(topology, nodes, directories))
        found = read_all(readers)
        result = PullResult(where, missing=readers.missing,
                            unreachable=[(n, d, e.message) for n, d, e in readers.unreachable])
        known = dict(destination.known) if destination else _known(repo)
        by_node = {r.node + "\0" + r.directory: r for r in readers.readers}
        for snap in sorted(found, key=lambda s: (s.taken_at or "", s.node, s.file)):
            if not snap.complete:
                result.incomplete.append(snap)
                console.warn(f"skipping {snap.path} on node {snap.node}: {snap.problem}")
                continue
            if snap.sha256 in known:
                result.already.append((snap, known[snap.sha256 or ""]))
                continue
            reader = by_node[snap.node + "\0" + snap.directory]
            pulled = _pull_one(kube, console, topology, repo, reader, snap)
            if pulled is None:
                result.vanished.append(snap)
                continue
            known[snap.sha256 or ""] = destination.keep(pulled) if destination else pulled.manifest.id
            result.pulled.append(pulled)
    finally:
        stack.run(step)
        stack.run(release)
    return result


_GONE = 3


def _remote_sha(kube: Kube, reader: Reader, snap: NodeSnapshot) -> tuple[int, str] | None:
    """Size and SHA-256 of the file, computed in the pod; None if it is gone since the listing."""
    path = f"{MOUNT}/{snap.file}"
    out_buf = bytearray()
    result = open_exec(kube, reader.pod.namespace, reader.pod.name,
                       ["sh", "-c", f"[ -f {path} ] || exit {_GONE}; stat -c %s {path} && sha256sum {path}"],
                       container=READER_CONTAINER).run(stdout=out_buf.extend)
    if result.exit_code == _GONE:
        return None
    result.check(f"hashing {snap.path} on node {snap.node}")
    out = bytes(out_buf).decode(errors="replace").split()
    if len(out) < 2 or not out[0].isdigit() or not _SHA256.match(out[1]):
        raise VerificationError(f"the reader pod on node {snap.node} printed an unexpected size or digest: {out[:3]}")
    return int(out[0]), out[1]


def _pull_one(kube: Kube, console: Console, topology: Discovered, repo: Repository, reader: Reader,
              snap: NodeSnapshot) -> SnapshotResult | None:
    started = time.monotonic()
    where = f"{snap.path} on node {snap.node}"
    remote = _remote_sha(kube, reader, snap)
    if remote is None:
        # A schedule run's retention removed it after we listed it: there are newer ones.
        console.warn(f"{where} was removed since the listing (by the schedule's retention); skipped")
        return None
    size, digest = remote
    if size != snap.size or digest != snap.sha256:
        raise VerificationError(f"{where} changed since its run recorded it: {size} bytes with SHA-256 {digest} "
                                f"now, {snap.size} bytes with SHA-256 {snap.sha256} in its sidecar",
                                hint="Nothing was copied. The file on the node is damaged or was replaced; "
                                     "look at it before trusting it.")
    member_obj = next((m for m in topology.members if m.node == snap.node), None)
    member_name = member_obj.name if member_obj else snap.node
    console.say(f"pulling {where} ({units.size(size)}, taken {snap.taken_at})")
    taken = _parse_time(snap.taken_at)
    source = {"cluster": kube.resolved.server, "node": snap.node, "member": member_name}
    cluster = identity_for_backup(kube, console.say)
    with repo.create(BACKUP_TYPE, source, name_hint=snap.node, created_at=taken, cluster=cluster) as writer:
        part = writer.open_part(PART_NAME, keep_local=True, size_hint=size)
        copy_started = time.monotonic()
        stream = open_exec(kube, reader.pod.namespace, reader.pod.name, ["cat", f"{MOUNT}/{snap.file}"],
                           container=READER_CONTAINER, timeouts=Timeouts())
        with counted(part.write, console.progress, f"pull {snap.node}:{snap.file}", size) as write:
            exec_result = stream.run(stdout=write)
        written = part.close()
        exec_result.check(f"streaming {where}")
        if written.size != size or written.sha256 != digest:
            raise VerificationError(f"the copy of {where} is damaged: received {written.size} bytes with SHA-256 "
                                    f"{written.sha256}, the pod has {size} bytes with SHA-256 {digest}; nothing "
                                    "was kept")
        copy_seconds = time.monotonic() - copy_started
        status = verify_snapshot(part.path)
        if snap.revision is not None and "etcdctl-snapshot-status" in snap.checks and status.revision != snap.revision:
            raise VerificationError(f"{where}: the database's revision is {status.revision}, etcdctl on the node "
                                    f"read {snap.revision}; nothing was kept")
        member: dict[str, Any] = {"name": member_name, "node": snap.node, "image": snap.image,
                                  "version": image_version(snap.image or "") or snap.etcdctl_version,
                                  "id": snap.member_id, "clusterID": snap.cluster_id}
        if member_obj is not None:
            member["endpoint"] = member_obj.client_url
        extra = {"mode": "node-local", "server": kube.resolved.server, "schedule": snap.schedule,
                 "nodeFile": snap.path, "takenAt": snap.taken_at, "nodeChecks": snap.checks,
                 "image": snap.image, "pod": f"{reader.pod.namespace}/{reader.pod.name}",
                 "transfer": {"bytes": written.size, "seconds": round(copy_seconds, 3), "remoteSha256": digest,
                              "remoteSize": size}}
        manifest = writer.commit(manifest_details(status, {k: v for k, v in member.items() if v is not None}, extra))
    console.say(f"  saved as {manifest.id}")
    return SnapshotResult(manifest, repo.backup_location(manifest.id), status, time.monotonic() - started,
                          repo.location)


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
