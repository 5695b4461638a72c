"""What a restore (or a diff) reads: a backup's archive and entry record, or a plain tar file.

Everything here happens on this machine before anything is created in the cluster: the archive is read
header by header (`tar_reader`: it must be one both tars extract alike, and not empty unless asked or
the backup's entry record says the volume was empty), the entry record is read and checked against the
manifest's size and SHA-256, and the two must describe the same entries. A plain tar file has no
record: its headers are all there is to restore and check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr.clusters import ClusterIdentity, latest_of, origin_note
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.repo import Backup, BackupCorruptError, BackupNotFoundError, Repository
from kubectl_dr.repo.crypto import Identity
from kubectl_dr.repo.staging import local_parts
from kubectl_dr.units import count
from kubectl_dr.volumes.entries import PART, Entries, Entry
from kubectl_dr.volumes.tar_reader import Archive, ArchiveError, empty_archive_error, read_archive

ARCHIVE_PART = "data.tar"
TYPE = "pvc"


@dataclass
class Source:
    path: Path  # the archive, a local file
    size: int
    sha256: str | None  # the manifest's; None for a plain tar file (hashed while it is sent)
    backup: Backup | None
    archive: Archive
    entries: Entries
    recorded: bool  # the entries come from the pod's listing (False: from tar headers)
    # Every part was read back here and matched the manifest's sizes and SHA-256 (staged from S3 or
    # decrypted): verifying the backup again would only download it twice.
    verified: bool = False
    # Where the backup came from when that is not this cluster ("backup X is of cluster A …, restoring
    # into cluster B …"), or that it records no cluster; None for this cluster's own, or a tar file.
    origin: str | None = None
    # A restic snapshot's ID, when the archive was built from one (it is no backup of the plain repository).
    snapshot: str | None = None
    # path → each regular file's chunks (blob ID = SHA-256 of the chunk, and its length), when the source
    # has them (a restic snapshot): what an incremental restore compares the volume's files with, in the pod.
    chunks: dict[str, list[tuple[str, int]]] | None = None
    # A source whose archive is written only when asked (a restic snapshot): of every entry (None) or of
    # the given paths only, so that an incremental restore reads only the blobs it sends.
    materialize: Callable[[set[str] | None], Source] | None = None
    # path → (inode, size, mtime s, ctime s) of each regular file the snapshot's own backup listed with a
    # change time a whole second before the backup began (a restic snapshot we wrote): a volume file with
    # exactly these is that file, untouched since (see incremental_restore), and is not hashed.
    unchanged_since: dict[str, tuple[int, int, int, int]] | None = None
    unchanged_cluster: str = ""  # and only in the claim of that backup, in its cluster (this uid)
    # A data blob's plaintext by its ID, checked (a restic snapshot): what a large file written in place
    # in part is written from (`restic_in_place`).
    load_blob: Callable[[str], bytes] | None = None

    @property
    def gnu_only(self) -> bool:
        """Holds GNU sparse members: only a pod with GNU tar can extract it."""
        return any(m.sparse for m in self.archive.members.values())

    @property
    def empty_volume(self) -> bool:
        """A backup of an empty volume: its entry record says so (and the archive agrees)."""
        return self.recorded and self.backup is not None and self.archive.empty

    @property
    def label(self) -> str:
        if self.backup is not None:
            return f"backup {self.backup.id} (of {self._claim_of()})"
        if self.snapshot is not None:  # its archive is a scratch file of this run, no name to give
            return f"restic snapshot {self.snapshot[:8]}"
        return f"the tar file {self.path}"

    def other_claim(self, namespace: str, claim: str) -> str | None:
        """The claim the backup is of, when it is not the one restored into: a mistyped ID would otherwise
        overwrite one app's volume with another's without a word."""
        of = self._claim_of()
        return of if of is not None and of != f"{namespace}/{claim}" else None

    def _claim_of(self) -> str | None:
        if self.backup is None:
            return None
        src = self.backup.manifest.source
        return f"{src.get('namespace', '?')}/{src.get('pvc', '?')}"


def parse_claim_ref(text: str) -> tuple[str | None, str]:
    """`NS/CLAIM` or `CLAIM` (--from-claim)."""
    namespace, _, claim = text.rpartition("/")
    if not claim or "/" in namespace:
        raise DrError(f'--from-claim "{text}": expected NAMESPACE/CLAIM or CLAIM')
    return namespace or None, claim


def find_backup(repo: Repository, ref: str, namespace: str, claim: str, from_claim: str | None,
                cluster: str | None = None) -> Backup:
    """`--from` as a backup: an ID, a prefix, a directory, or `latest` of this claim (or --from-claim's) in
    the cluster whose UID is ``cluster``."""
    if ref != "latest":
        return repo.resolve(ref, TYPE)
    of_namespace, of_claim = parse_claim_ref(from_claim) if from_claim else (namespace, claim)
    match = {"namespace": of_namespace or namespace, "pvc": of_claim}
    try:
        newest = repo.resolve(ref, TYPE, match, cluster=cluster)
    except BackupNotFoundError as exc:
        others = repo.backups(TYPE)
        if others and not repo.backups(TYPE, match):
            shown = ", ".join(f"{b.id} ({b.manifest.source.get('namespace')}/{b.manifest.source.get('pvc')})"
                              for b in others[:5])
            exc.hint = (f"{count(len(others), 'pvc backup')} in {repo.location}, newest first: {shown}. Restore one "
                        "with --from ID, or the newest of another claim with --from latest --from-claim NS/CLAIM.")
        raise
    def uid(b: Backup) -> str | None:
        return b.manifest.cluster.uid if b.manifest.cluster is not None else None

    _refuse_found_damaged(repo, newest, match, [b for b in repo.backups(TYPE, match) if uid(b) == uid(newest)])
    return newest


def _refuse_found_damaged(repo: Repository, newest: Backup, match: dict[str, str], series: list[Backup]) -> None:
    """`latest` whose last `backups verify` found it damaged: said at once, with the newest backup of the same
    series (``series``, newest first: this claim in this cluster) not found damaged, instead of after its download
    (or by a restore that cannot succeed)."""
    record = repo.verification(newest)
    if record is None or record.ok:
        return
    older = next((b for b in series if b.id != newest.id and ((r := repo.verification(b)) is None or r.ok)), None)
    raise VerificationError(
        f"the newest backup of {match['namespace']}/{match['pvc']}, {newest.id}, was found damaged by `backups "
        f"verify` ({record.verified_at}{': ' + record.problem if record.problem else ''})",
        hint=(f"Restore the newest one not found damaged: --from {older.id}." if older is not None else
              "No other backup of this claim is known to be intact (kubectl dr backups list).")
        + f" `kubectl dr backups verify {newest.id}` checks the damaged one again.")


def resolve(repo: Repository, ref: str, namespace: str, claim: str, console: Console, *,
            from_claim: str | None = None, allow_empty: bool = False,
            identity: Sequence[Identity] | None = None, dry_run: bool = False, purpose: str = "restore",
            current: ClusterIdentity | None = None, unknown_why: str = "", server: str = "",
            from_cluster: str | None = None) -> Source:
    """``current``: the cluster restored into (`latest` is its newest); ``from_cluster``: another one's.
    ``current`` None: this user may not read kube-system (``unknown_why``), ``server`` is the API server."""
    candidate = Path(ref).expanduser()
    if candidate.is_file():
        if purpose == "restore":
            console.say(f"restoring from the tar file {candidate} (no manifest: it is checked as it is sent)")
        else:
            console.say(f"reading the tar file {candidate} (no manifest: its headers are all there is to compare)")
        archive = read_archive(candidate, gnu_sparse=True, allow_empty=allow_empty)
        return Source(candidate.absolute(), candidate.stat().st_size, None, None, archive, from_headers(archive),
                      False)
    if from_claim and ref != "latest":
        raise DrError("--from-claim only goes with --from latest")
    if ref == "latest" and current is None and server and not from_cluster:
        backup = _latest_by_server(repo, namespace, claim, from_claim, server, unknown_why, console)
    else:
        uid = latest_of(ref, current, from_cluster, repo.cluster_uid, unknown_why)
        backup = find_backup(repo, ref, namespace, claim, from_claim, uid)
    origin = _origin(backup, current)
    if origin:
        console.say(f"note: {origin}")
    part = backup.manifest.part(ARCHIVE_PART)
    parts = local_parts(repo, backup, [ARCHIVE_PART, PART], console, identity)
    staged = parts.staged
    path = parts.files[ARCHIVE_PART]
    # Listing reads every header (about 25 µs an entry): a volume of a million files takes a while.
    console.say(f"listing backup {backup.id} (every entry must land inside the volume)")
    try:
        archive = read_archive(path, gnu_sparse=True, allow_empty=True)
    except DrError:
        console.say(f"the archive of backup {backup.id} cannot be listed; checking it against its checksums")
        repo.verify(backup, record=not dry_run)  # a dry run writes nothing into the repository
        raise
    entries, recorded = read_entries(backup, parts.files.get(PART) if staged else None), True
    if entries is None:
        entries, recorded = from_headers(archive), False
    else:
        check_record(backup.id, archive, entries)
    if archive.empty:
        # The pod's own listing of the volume says it was empty: that is what the user backed up, not a
        # broken download. Only an archive without that record needs --allow-empty.
        if not recorded and not allow_empty:
            raise empty_archive_error(f"backup {backup.id}")
        if recorded:
            console.say(f"the backup holds an empty volume (backup {backup.id}: its entry record says so)")
    return Source(path, part.size, part.sha256, backup, archive, entries, recorded, verified=staged, origin=origin)


def _latest_by_server(repo: Repository, namespace: str, claim: str, from_claim: str | None, server: str, why: str,
                      console: Console) -> Backup:
    """`latest` for a user who may not read kube-system (a namespaced role): the cluster's uid is unknown, so
    the server URL its backups record stands in for it, and so do the backups this user wrote (which could not
    record a cluster either). Said, because a URL is a hint: a rebuilt cluster may answer at the same one."""
    of_namespace, of_claim = parse_claim_ref(from_claim) if from_claim else (namespace, claim)
    match = {"namespace": of_namespace or namespace, "pvc": of_claim}
    fitting = [b for b in repo.backups(TYPE, match)
               if b.manifest.cluster is None or b.manifest.cluster.server == server]
    if not fitting:
        raise BackupNotFoundError("latest", repo.location, message=f"there is no pvc backup of {match['namespace']}/"
                                  f"{match['pvc']} taken through {server} in {repo.location}")
    console.warn(f"warning: this cluster's identity is unknown (cannot read the kube-system namespace: {why}): "
                 f"`latest` is the newest backup taken through {server}, or that records no cluster")
    _refuse_found_damaged(repo, fitting[0], match, fitting)
    return fitting[0]


def _origin(backup: Backup, current: ClusterIdentity | None) -> str | None:
    if current is None:
        return origin_note(backup.id, None, ClusterIdentity("")) if backup.manifest.cluster is None else None
    return origin_note(backup.id, backup.manifest.cluster, current)


def read_entries(backup: Backup, staged: Path | None = None) -> Entries | None:
    """The backup's entry record, checked against the manifest; None for backups made before it existed."""
    try:
        part = backup.manifest.part(PART)
    except KeyError:
        return None
    path = staged or backup.part_path(PART)
    digest = hashlib.sha256()
    total = 0

    def lines() -> Iterator[bytes]:
        nonlocal total
        try:
            with open(path, "rb") as f:
                for line in f:
                    digest.update(line)
                    total += len(line)
                    yield line
        except OSError as exc:
            raise BackupCorruptError(backup.id, PART, f"cannot be read: {exc.strerror}") from None

    entries = Entries.read(lines(), f"backup {backup.id}")
    if (total, digest.hexdigest()) != (part.size, part.sha256):
        raise BackupCorruptError(backup.id, PART, f"is {total} bytes with SHA-256 {digest.hexdigest()}, the manifest "
                                                  f"says {part.size} bytes with SHA-256 {part.sha256}")
    return entries


def from_headers(archive: Archive) -> Entries:
    """A record from tar headers alone (a plain tar file, or a backup older than entry records)."""
    entries = Entries()
    for m in archive.members.values():
        entries.items[m.path] = Entry(m.path, m.kind, m.mode, m.uid, m.gid, m.size, m.mtime, m.target,
                                      (m.size + 511) // 512, m.rdev)
    return entries


def check_record(backup_id: str, archive: Archive, entries: Entries) -> None:
    """The record and the archive describe the same entries: else one of them is not this backup's."""
    problems = []
    for path, member in archive.members.items():
        entry = entries.get(path)
        if entry is None:
            problems.append(f"{path or '.'!r} is in the archive but not in the entry record")
        elif (entry.kind, entry.size, entry.target) != (member.kind, member.size, member.target):
            problems.append(f"{path or '.'!r} is a {member.kind} of {member.size} bytes in the archive, "
                            f"a {entry.kind} of {entry.size} bytes in the record")
    problems += [f"{p!r} is in the entry record but not in the archive" for p in entries.items
                 if p and p not in archive.members]
    if problems:
        raise VerificationError(f"backup {backup_id}: its archive and its entry record disagree: "
                                + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""),
                                hint="Do not restore from it; use another backup (kubectl dr backups list).")


__all__ = ["ArchiveError", "Source", "check_record", "find_backup", "from_headers", "read_entries", "resolve"]
