"""`kubectl dr etcd snapshot --repo restic:REPO`: the snapshot taken, moved and checked exactly as for any
repository (into a private staging directory here), then stored as a one-file restic snapshot.

The restic snapshot is shaped as `restic backup --stdin --stdin-filename snapshot.db` makes it (path
`/snapshot.db`), its host is the member's node (the name the snapshot is stored under in a plain
repository), its tags `cluster=UID`, `kind=etcd-snapshot`, `member=NAME`, `etcd=VERSION`, `revision=N` and
`sha256=…`, so `restic restore` gives the file back and `kubectl dr etcd restore --from ID` finds and checks
it. Nothing is stored before the file passed the bbolt check; the staging directory goes however the
command ends.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.etcd.snapshot import BACKUP_TYPE, PART_NAME, SnapshotResult
from kubectl_dr.repo import LocalRepository, Repository
from kubectl_dr.repo.restic.location import shown
from kubectl_dr.units import size

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository
    from kubectl_dr.repo.restic.snapshots import Snapshot

KIND_TAG = f"kind={BACKUP_TYPE}"
_TAG_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")  # restic splits tags at commas


@dataclass
class ResticSnapshotResult:
    snapshot: Snapshot
    repository: str
    taken: SnapshotResult  # what the snapshot run recorded (member, revision, keys, transfer)

    def to_dict(self) -> dict[str, Any]:
        taken = self.taken.to_dict()
        return {"kind": "ResticSnapshot", "id": self.snapshot.id, "shortId": self.snapshot.short_id,
                "repository": self.repository, "hostname": self.snapshot.hostname, "paths": self.snapshot.paths,
                "tags": self.snapshot.tags, "type": BACKUP_TYPE, "cluster": taken.get("cluster"),
                "source": taken.get("source"), "details": taken.get("details"), "size": taken["size"],
                "sha256": taken["sha256"], "seconds": taken["seconds"]}

    def columns(self) -> list[str]:
        return ["ID", "HOST", "MEMBER", "ETCD", "REVISION", "KEYS", "SIZE", "SHA256"]

    def rows(self) -> list[list[Any]]:
        member = self.taken.manifest.details.get("member") or {}
        status = self.taken.status
        return [[self.snapshot.short_id, self.snapshot.hostname, member.get("name") or member.get("endpoint") or "-",
                 member.get("version") or "-", status.revision, status.total_keys, size(status.file_size),
                 status.sha256[:16]]]


def tags_for(taken: SnapshotResult) -> list[str]:
    manifest = taken.manifest
    member = manifest.details.get("member") or {}
    tags = [f"cluster={manifest.cluster.uid}"] if manifest.cluster is not None else []
    tags.append(KIND_TAG)
    for key, value in (("member", member.get("name")), ("etcd", member.get("version")),
                       ("revision", taken.status.revision)):
        if value is not None and _TAG_VALUE.match(str(value)):
            tags.append(f"{key}={value}")
    return tags


def host_for(taken: SnapshotResult) -> str:
    source = taken.manifest.source
    return str(source.get("node") or source.get("member") or "etcd")


def staging_repository() -> tuple[LocalRepository, Callable[[], None]]:
    """A private kubectl-dr repository here (mode 0700: an etcd snapshot holds every Secret) that the
    snapshots pass through on their way into a restic repository, and how to remove it (also done by the
    command's cleanup, however it ends)."""
    staging = Path(tempfile.mkdtemp(prefix="kubectl-dr-etcd-"))
    step = cleanup.current().push(f"remove the staged etcd snapshots in {staging}",
                                  lambda: shutil.rmtree(staging, ignore_errors=True))
    local = LocalRepository(staging / "repo")
    local.preflight(create=True)
    return local, lambda: cleanup.current().run(step)


def store_taken(restic: ResticRepository, taken: SnapshotResult) -> Snapshot:
    """The checked snapshot file of `taken` (in a local repository) as a one-file restic snapshot, with the
    time it was taken."""
    from kubectl_dr.repo.restic import singlefile

    stored = singlefile.store(restic, Path(taken.path) / PART_NAME, PART_NAME, hostname=host_for(taken),
                              tags=tags_for(taken), sha256=taken.status.sha256,
                              taken=int(taken.manifest.created_at.timestamp() * 1e9))
    return stored.snapshot


def known_sha256(restic: ResticRepository) -> dict[str, str]:
    """SHA-256 of every etcd snapshot the restic repository holds (its sha256= tag) → its short ID."""
    from kubectl_dr.repo.restic import singlefile

    out: dict[str, str] = {}
    for snap in restic.snapshots():
        digest = singlefile.recorded_sha256(snap)
        if KIND_TAG in snap.tags and digest:
            out.setdefault(digest, snap.short_id)
    return out


def take(restic: ResticRepository, console: Console, snapshot: Callable[[Repository], SnapshotResult]
         ) -> ResticSnapshotResult:
    """Runs `snapshot` into a private staging repository, then stores its checked file in `restic`."""
    local, remove = staging_repository()
    try:
        taken = snapshot(local)
        where = restic.backend.describe()
        console.say(f"storing the snapshot in the restic repository {where}")
        stored = store_taken(restic, taken)
    finally:
        remove()  # now, not said at the end
    return ResticSnapshotResult(stored, shown(where), taken)


@dataclass(frozen=True)
class KeptSnapshot:
    """An etcd snapshot kept in a restic repository, as its snapshot file and tags describe it (a snapshot
    `restic backup --stdin` made carries no member or revision: those are None)."""

    id: str
    short_id: str
    time: int  # ns since the epoch: when it was taken
    node: str
    cluster: str | None
    member: str | None
    etcd: str | None
    revision: int | None
    size: int | None
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        from kubectl_dr.repo.restic import nodes

        return {"id": self.id, "shortId": self.short_id, "time": nodes.format_time(self.time), "node": self.node,
                "cluster": self.cluster, "member": self.member, "etcdVersion": self.etcd, "revision": self.revision,
                "size": self.size, "sha256": self.sha256}


def kept(restic: ResticRepository) -> list[KeptSnapshot]:
    """Every `kind=etcd-snapshot` snapshot of the repository, newest first. The size is the snapshot's own
    summary (what was stored); the tags are the writer's word, shown, never trusted for a restore (that
    reads the file and checks it against its SHA-256)."""
    from kubectl_dr.repo.restic import singlefile

    out = []
    for snap in restic.snapshots():
        if KIND_TAG not in snap.tags:
            continue
        revision = snap.tag_value("revision")
        processed = (snap.summary or {}).get("total_bytes_processed")
        out.append(KeptSnapshot(snap.id, snap.short_id, snap.time, snap.hostname, snap.tag_value("cluster"),
                                snap.tag_value("member"), snap.tag_value("etcd"),
                                int(revision) if revision and revision.isdigit() else None,
                                int(processed) if isinstance(processed, int) else None,
                                singlefile.recorded_sha256(snap)))
    return sorted(out, key=lambda k: k.time, reverse=True)
