"""`pvc backup --repo restic:REPO`: the volume into a restic snapshot, through the same read-only rescue pod.

The pod lists the volume (the truth about every entry), then streams `tar -c` of it. The stream is
checked end to end as every backup's is (size and SHA-256 in the pod and here, tar's exit, the archive
read as the restoring tar reads it, reconciled with the listing); its files are cut into blobs and
packed while it arrives, and only a stream that passed every check gets an index and a snapshot. Tree
nodes take owners, modes, times, inodes and links from the listing (tar headers lose large uids,
symlink owners and times before 1970).

Written in restic's order: data packs, trees, the index, then the snapshot, under a non-exclusive
restic lock (so `restic prune` waits for us and we refuse to write under its exclusive lock). An
interruption leaves at most unreferenced packs, which `restic check` accepts and `restic prune` removes.
The snapshot: path `/CLAIM`, host `NS/CLAIM`, tags naming the cluster, namespace, claim and kind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import __version__
from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.repo.restic import archiver, nodes
from kubectl_dr.repo.restic.blob_stream import BlobStream
from kubectl_dr.repo.restic.locks import Lock
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.session import Session
from kubectl_dr.units import count, size
from kubectl_dr.volumes import backup as tar_backup
from kubectl_dr.volumes import entries as entries_module
from kubectl_dr.volumes import restic_blocks, restic_incremental, scripts, transfer
from kubectl_dr.volumes.access import BACKUP, plan_access
from kubectl_dr.volumes.entries import Entry
from kubectl_dr.volumes.exposer import Exposure, claim_lease, say_plan
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.restic_content import ContentCutter
from kubectl_dr.volumes.tar_reader import TarReader

KIND = "pvc"
LOCK_WAIT = 300.0  # seconds we wait for another client's exclusive lock (a prune) to go
_TYPES = {entries_module.FILE: nodes.FILE, entries_module.HARDLINK: nodes.FILE, entries_module.DIR: nodes.DIR,
          entries_module.SYMLINK: nodes.SYMLINK, entries_module.FIFO: nodes.FIFO, entries_module.CHAR: nodes.CHARDEV,
          entries_module.BLOCKDEV: nodes.DEV, entries_module.SOCKET: nodes.SOCKET}


@dataclass
class ResticBackupResult:
    snapshot: Snapshot
    repository: str
    entries: int
    content_bytes: int
    stored_bytes: int
    seconds: float
    changed: list[str] = field(default_factory=list)
    received_bytes: int = 0  # what crossed the API (the tar stream)
    incremental: bool = False
    blocks: dict[str, int] = field(default_factory=dict)  # large changed files compared chunk by chunk

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ResticSnapshot", "id": self.snapshot.id, "shortId": self.snapshot.short_id,
                "repository": self.repository, "hostname": self.snapshot.hostname, "paths": self.snapshot.paths,
                "tags": self.snapshot.tags, "parent": self.snapshot.parent, "entries": self.entries,
                "contentBytes": self.content_bytes, "storedBytes": self.stored_bytes, "seconds": self.seconds,
                "receivedBytes": self.received_bytes, "incremental": self.incremental,
                **({"blocks": self.blocks} if self.blocks else {})}

    def columns(self) -> list[str]:
        return ["ID", "HOST", "ENTRIES", "SIZE", "READ", "ADDED"]

    def rows(self) -> list[list[Any]]:
        return [[self.snapshot.short_id, self.snapshot.hostname, self.entries, size(self.content_bytes),
                 size(self.received_bytes), size(self.stored_bytes)]]


def tags_for(cluster_uid: str | None, namespace: str, claim: str) -> list[str]:
    return [*([f"cluster={cluster_uid}"] if cluster_uid else []), f"namespace={namespace}", f"claim={claim}",
            f"kind={KIND}"]


OpenRepo = Callable[[Callable[[str], bool]], Repository]


def run(session: Session, open_repo: OpenRepo | None, where: str,
        opts: tar_backup.BackupOptions, *, force: bool = False) -> ResticBackupResult | tar_backup.BackupPlan:
    """`open_repo(create)` opens the repository, `create(description)` deciding on `init` when there is none;
    None only in a dry run, which opens or creates none. It is called once the claim is known to exist, so
    a wrong name leaves no new repository behind. `force` reads every file even when the claim has a
    parent snapshot."""
    kube, console, dry_run = session.kube, session.console, session.dry_run
    access = plan_access(kube, opts.namespace, opts.claim, job=BACKUP, read_only=True, quiesce=opts.quiesce)
    say_plan(console, access)
    if dry_run == "client" or open_repo is None:
        claim_lease(kube, access, session.run, "client").acquire()
        return tar_backup.BackupPlan(access, where, "client")

    def create(description: str) -> bool:
        console.confirm(f"create a new restic repository at {description} (restic init)")
        return True

    # The repository side (key, lock, the parent's trees) in a thread while the pod starts and lists the
    # volume: they wait on the cluster, it on the repository and the CPU.
    with Exposure(session, access, opts.image, "pvc-backup") as exposure, \
            _RepoSide(open_repo, create, opts.namespace, opts.claim, force) as side:
        # The snapshot's time, before the listing as before: a restore trusts only change times a whole second
        # earlier (`restic_source._stat_key`), so an earlier time only trusts fewer files.
        started = time.time_ns()
        clock = time.monotonic()
        listed: list[tuple[dict[str, Found], int]] = []
        if access.stop:  # the app stops only for a repository that is there and ours to write
            side.wait_locked()
        pod = tar_backup.start_reader(session, exposure, access, opts,  # listed while its tools are probed
                                      beside_probe=lambda p: listed.append(transfer.list_volume_clocked(kube, p)))
        if pod is None:
            return tar_backup.BackupPlan(access, where, dry_run, pod_accepted=True)
        assert pod.tools is not None
        found, listed_at = listed[0]
        skipped = tar_backup.skipped_entries(found, pod, opts, console)
        cluster = identity_for_backup(kube, console.warn)
        what = f"backup of the volume through pod {pod.namespace}/{pod.name}"
        repo, parent, old = side.result()
        plan = None
        if parent is not None and not force:
            plan = restic_incremental.plan(repo, old, found, skipped)
            if not restic_incremental.fits(plan, pod.tools.tar):
                console.say(f"{len(plan.send)} changed entries are too many to name in one command: reading "
                            "the whole volume")
                plan = None
        changed: list[str] = []
        blocks: dict[str, int] = {}
        if plan is not None:
            assert parent is not None
            compared = f", {count(len(plan.blocks), 'large file')} to compare chunk by chunk" if plan.blocks else ""
            console.say(f"parent snapshot {parent.short_id}: {len(plan.reuse)} unchanged files "
                        f"({size(plan.reused_bytes)}) reused unread; {len(plan.send)} entries to read{compared}")
            contents, targets, received = restic_incremental.stream(kube, repo, pod, plan, console, what)
            blocked = restic_blocks.back_up(kube, repo, pod, list(plan.blocks.values()), console, what)
            pod.release()
            contents.update(blocked.contents)
            received += blocked.received_bytes
            blocks = blocked.to_dict() if plan.blocks else {}
            items = restic_incremental.items(plan, contents, targets)
            files = [f for f in plan.keep.values() if f.kind == entries_module.FILE]
            entry_count, content_bytes, file_count = len(plan.keep), sum(f.size for f in files), len(files)
        else:
            items, record, received = _full(kube, repo, pod, opts, access, found, skipped, console, what)
            changed = record.changed
            entry_count, content_bytes = len(record.entries), record.entries.content_bytes
            file_count = record.entries.count(entries_module.FILE)
        mark_racy(items, listed_at)
        tree = archiver.save_trees(repo, items, f"/{opts.claim}", started)
        repo.flush()  # packs and index before the snapshot
        snap = Snapshot(time=started, tree=tree, paths=[f"/{opts.claim}"],
                        hostname=f"{opts.namespace}/{opts.claim}", username=os.environ.get("USER", ""),
                        tags=tags_for(cluster.uid if cluster else None, opts.namespace, opts.claim),
                        parent=parent.id if parent else None, program_version=f"kubectl-dr {__version__}",
                        summary={"backup_start": nodes.format_time(started),
                                 "backup_end": nodes.format_time(time.time_ns()),
                                 "total_files_processed": file_count,
                                 "total_bytes_processed": content_bytes,
                                 "data_added_packed": repo.bytes_stored})
        repo.save_snapshot(snap)
        exposure.finish()
    return ResticBackupResult(snap, where, entry_count, content_bytes, repo.bytes_stored,
                              round(time.monotonic() - clock, 3), changed, received, plan is not None, blocks)


# A change time this close to the listing's own second may not be the file's last: `stat` shows whole
# seconds, and the kernel stamps change times from a coarse clock that can lag the `date` read just
# before the listing. A write in that second after the listing (or after tar read the file) leaves the
# change time as listed, so size, mtime, ctime and inode would all match while the content does not.
RACY_SECONDS = 1


def mark_racy(items: list[archiver.Item], listed_at: int) -> None:
    """Change times at or after `listed_at - RACY_SECONDS` (the node's clock, read just before the listing)
    are stored one nanosecond on, a value our whole-second listing can never equal: the next backup reads
    such a file again instead of reusing its content, and a restore hashes it instead of trusting it (git's
    answer to the same "racy" files). restic itself reads a change time only to compare it; nothing restores
    one."""
    limit = (listed_at - RACY_SECONDS) * nodes.NS
    for item in items:
        node = item.node
        if node.type == nodes.FILE and node.ctime >= limit and node.ctime % nodes.NS == 0:
            node.ctime += 1


def _full(kube: Kube, repo: Repository, pod: Any, opts: tar_backup.BackupOptions, access: Any,
          found: dict[str, Found], skipped: list[Any], console: Console,
          what: str) -> tuple[list[archiver.Item], Any, int]:
    """The whole volume as one checked tar stream (a first backup, --force, or too many changes to name),
    its files cut into blobs as it arrives; the blobs count only once the whole stream has been judged."""
    assert pod.tools is not None
    with BlobStream[str](repo) as blobs:
        cutter = ContentCutter(blobs)
        reader = TarReader(gnu_sparse=pod.tools.tar == scripts.GNU, on_member=cutter.member, on_data=cutter.data)
        with console.progress(f"backup {opts.namespace}/{opts.claim}",
                              tar_backup.archive_size_estimate(found)) as bar:
            checked = transfer.receive_fed(kube, pod, scripts.backup_script(pod.tools.tar), reader.feed, bar, what)
            pod.release()
        record = tar_backup.judged_archive(reader, found, skipped, checked, access, console, what)[1]
        cutter.finish()
        contents = blobs.close()
    items = [_item(e, found.get(e.path), contents, record.entries) for e in record.entries]
    return items, record, checked.size


class _Missing(Exception):
    """The repository does not exist yet: it is created, after asking, in the main thread."""


class _RepoSide:
    """The repository opened, its lock taken and the claim's latest snapshot and its files read, in a thread
    beside the pod's start and listing. The lock comes before the parent is read, as restic takes it: the
    parent's trees are then read against the index this backup writes against, which no prune can change
    under us. A repository that does not exist yet is created in the main thread by `result()` (the person
    is asked there, not in a thread). Leaving the block stops the work at its next step (the lock's wait,
    the parent's next entry), waits for it, and releases the lock if it was taken."""

    def __init__(self, open_repo: OpenRepo, create: Callable[[str], bool], namespace: str, claim: str,
                 force: bool) -> None:
        self._open_repo, self._create = open_repo, create
        self._namespace, self._claim, self._force = namespace, claim, force
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1, "restic-repository")
        self._future: Future[tuple[Repository, Snapshot | None, dict[str, nodes.Node]]] | None = None
        self._lock: Lock | None = None
        self._locked = threading.Event()
        self._done: tuple[Repository, Snapshot | None, dict[str, nodes.Node]] | None = None

    def __enter__(self) -> _RepoSide:
        self._future = self._pool.submit(self._work, None)
        return self

    def _work(self, repo: Repository | None) -> tuple[Repository, Snapshot | None, dict[str, nodes.Node]]:
        if repo is None:
            repo = self._open_repo(_missing)
        self._lock = Lock(repo, wait=LOCK_WAIT, stop=self._cancel)
        self._lock.__enter__()
        self._locked.set()
        parent = latest_of(repo, self._namespace, self._claim)
        if parent is None or self._force:  # --force still names the parent; it reads every file
            return repo, parent, {}
        return repo, parent, restic_incremental.parent_files(repo, parent, self._cancel.is_set)

    def wait_locked(self) -> None:
        """Until the repository is open and locked: before the app's consumers are stopped, so that a wrong
        password, another client's lock (a prune's, waited for up to LOCK_WAIT) or a repository that does not
        exist yet (created here, after asking) costs the app no stop. Raises what opening or locking raised."""
        assert self._future is not None
        while not self._locked.wait(0.05):
            if self._future.done():
                self.result()
                return

    def result(self) -> tuple[Repository, Snapshot | None, dict[str, nodes.Node]]:
        assert self._future is not None
        if self._done is None:
            try:
                self._done = self._future.result()
            except _Missing:
                self._done = self._work(self._open_repo(self._create))  # a new repository has no parent to read
        return self._done

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=True)
        if self._lock is not None:
            self._lock.__exit__(None, None, None)


def _missing(description: str) -> bool:
    raise _Missing(description)


def latest_of(repo: Repository, namespace: str, claim: str) -> Snapshot | None:
    mine = [s for s in repo.snapshots()
            if s.hostname == f"{namespace}/{claim}" and s.paths == [f"/{claim}"]]
    return mine[-1] if mine else None


def _item(entry: Entry, seen: Found | None, contents: dict[str, list[str]],
          record: entries_module.Entries) -> archiver.Item:
    node_type = _TYPES[entry.kind]
    try:
        nodes.check_node_name(entry.path.rsplit("/", 1)[-1] or "root")
        entry.path.encode("utf-8")
    except (nodes.ResticFormatError, UnicodeEncodeError):
        raise VerificationError(f"{entry.path!r} is not a name a restic tree can hold (not UTF-8)",
                                hint="Back this volume up into a kubectl-dr repository instead.") from None
    content: list[str] = []
    entry_size = 0
    if node_type == nodes.FILE:
        source = entry.target if entry.kind == entries_module.HARDLINK else entry.path
        if source not in contents and entry.size:
            raise VerificationError(f"{entry.path!r}: the archive holds no content for it")
        content = contents.get(source, [])
        if entry.kind == entries_module.HARDLINK:
            target = record.get(entry.target)
            entry_size = target.size if target else entry.size
        else:
            entry_size = entry.size
    mtime = entry.mtime * nodes.NS
    node = nodes.Node(
        name=entry.path.rsplit("/", 1)[-1], type=node_type, mode=nodes.go_mode(node_type, entry.mode),
        mtime=mtime, atime=mtime, uid=entry.uid, gid=entry.gid,
        inode=seen.inode if seen else 0, links=seen.links if seen else 0,
        ctime=seen.ctime * nodes.NS if seen and seen.ctime else mtime,
        size=entry_size, linktarget=entry.target if node_type == nodes.SYMLINK else "",
        device=os.makedev(*entry.rdev) if node_type in (nodes.DEV, nodes.CHARDEV) else 0, content=content)
    if node_type == nodes.DIR:
        node.subtree = ""
    return archiver.Item(entry.path, node)
