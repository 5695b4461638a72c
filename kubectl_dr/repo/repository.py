"""What every backup repository does, whatever holds it (a local directory, an S3 bucket, an Azure container).

A backup is a container (a directory, or a key prefix) holding ``manifest.json`` and its parts. A
backup's identity is the ID in its manifest, never the container's name: a copied directory is
reported, not listed twice. Listing, resolving, verification, reading and retention live here; the
subclasses hold the storage (`local.LocalRepository`, `s3.S3Repository`,
`azureblob.AzureRepository`).
"""

from __future__ import annotations

import builtins
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

from kubectl_dr import __version__
from kubectl_dr.clusters import OLDER_NOTE, ClusterIdentity, describe, pick
from kubectl_dr.repo import families, ids
from kubectl_dr.repo.crypto import Identity, Recipient, parse_recipients
from kubectl_dr.repo.errors import (
    AmbiguousBackupError,
    BackupCorruptError,
    BackupNotFoundError,
    EncryptedBackupError,
    ManifestError,
    PartOfAppBackupError,
    RepoError,
    WrongBackupTypeError,
)
from kubectl_dr.repo.manifest import (
    DELETION_NAME,
    MANIFEST_NAME,
    TYPE_PATTERN,
    VERIFICATION_NAME,
    Manifest,
    Part,
    format_time,
)
from kubectl_dr.repo.reading import PartReader, Progress, as_binary, read_stored
from kubectl_dr.repo.retention import Decision, Policy, plan
from kubectl_dr.repo.writer import BackupWriter, Staging

LATEST = "latest"
_MAX_COPIES = 10  # copies of one backup in one repository that prune removes in one run


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Backup:
    manifest: Manifest
    location: str  # for messages: a directory, or s3://bucket/prefix/ID
    path: Path | None = None  # the backup's directory, in a local repository
    key: str = ""  # the container's name in its repository (directory name, or key prefix)

    @property
    def id(self) -> str:
        return self.manifest.id

    def part_path(self, name: str) -> Path:
        """The part's file in a local repository (transition API: new code uses open_part/local_file)."""
        part = self.manifest.part(name)  # KeyError for a part the manifest does not list
        if self.path is None:
            raise RepoError(f'backup "{self.id}" is in {self.location}, not in a local directory, and this '
                            "command reads it as a local file",
                            hint=f"Copy it into a local repository first: kubectl dr backups copy {self.id} --to DIR "
                            "(then --repo DIR).")
        if part.encrypted:
            raise RepoError(f'backup "{self.id}" is encrypted (age), and this command reads it as a plain file',
                            hint=f"Decrypt the part by hand and use the file: age -d -i KEY "
                            f"{self.path / part.stored_file} > {name} (then --from ./{name}).")
        return self.path / part.stored_file


@dataclass(frozen=True)
class Leftover:
    """What an interrupted write or delete left: invisible to listings, removed by prune once stale."""

    name: str
    what: str
    stale: bool
    handle: Any = None


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # what interrupted writes left, removed (or to be)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (ID or leftover, why) that could not go
    reasons: dict[str, list[str]] = field(default_factory=dict)  # kept ID → the rules that keep it
    series: dict[str, str] = field(default_factory=dict)  # ID → series
    follows: dict[str, str] = field(default_factory=dict)  # claim backup removed → the app backup it goes with
    finishing: list[str] = field(default_factory=list)  # app backups whose interrupted delete is finished

    @property
    def stale_temp_dirs(self) -> list[str]:
        return self.leftovers


@dataclass(frozen=True)
class DeletionPlan:
    """What `backups delete` of one backup takes with it."""

    backup: Backup
    claims: list[Backup] = field(default_factory=list)  # its claims' backups: deleted after it is marked
    missing: list[str] = field(default_factory=list)  # claims' backups it names that are gone already
    shared: dict[str, list[str]] = field(default_factory=dict)  # claim backup → other app backups: kept

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.claims] + [self.backup.id]


@dataclass(frozen=True)
class Verification:
    """What `backups verify` last recorded beside a backup: whether it was intact, when, and what was checked."""

    ok: bool
    contents_checked: bool
    verified_at: str
    problem: str | None = None
    tool_version: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Verification:
        """A record read back from the repository (untrusted): a wrong shape is a ValueError, never a guess."""
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise ValueError("not a verification record")
        problem, version = data.get("problem"), data.get("toolVersion")
        return cls(data["ok"], data.get("contentsChecked") is True, str(data.get("verifiedAt") or ""),
                   str(problem) if problem is not None else None, str(version) if version is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {"verifiedAt": self.verified_at, "ok": self.ok, "contentsChecked": self.contents_checked,
                "problem": self.problem, "toolVersion": self.tool_version}


class Repository(ABC):
    """A backup repository. ``open_repository`` returns the right kind for a path or an s3:// URL."""

    kind = "abstract"
    remote = False  # off this machine: Secret-bearing backups written there unencrypted need consent

    def __init__(self, *, clock: Callable[[], datetime] = utcnow, recipients: Sequence[Recipient | str] = (),
                 identities: Sequence[Identity] = ()) -> None:
        self._clock = clock
        self.recipients: tuple[Recipient, ...] = tuple(_recipients(recipients))
        self.identities: tuple[Identity, ...] = tuple(identities)

    # --- what subclasses provide --------------------------------------------------------------------

    @property
    @abstractmethod
    def location(self) -> str:
        """The repository, for messages: a directory or s3://bucket/prefix."""

    @property
    def place(self) -> str:
        """What makes two repositories the same one (a copy into itself is refused): the location, and
        for a service that is addressed by an endpoint besides its name, that endpoint too."""
        return self.location

    @abstractmethod
    def backup_location(self, backup_id: str) -> str: ...

    @abstractmethod
    def _scan_raw(self) -> tuple[builtins.list[Backup], builtins.list[tuple[str, str]]]:
        """Every container with a readable manifest (any order), and the ones that could not be read."""

    @abstractmethod
    def _fetch(self, backup_id: str) -> Backup | None:
        """The backup whose container is named ``backup_id``, if there is one (a fast path)."""

    @abstractmethod
    def _new_staging(self, backup_id: str, *, exact: bool) -> Staging: ...

    @abstractmethod
    def _open_stored(self, backup: Backup, file: str) -> Any:
        """A raw reader (``readinto``/``close``) of a stored file; BackupCorruptError if it is missing."""

    @abstractmethod
    def _stored_sizes(self, backup: Backup) -> dict[str, int]:
        """The stored files of a backup and their sizes (cheap: a stat or a listing)."""

    @abstractmethod
    def _remove(self, backup: Backup) -> None: ...

    @abstractmethod
    def leftovers(self) -> builtins.list[Leftover]: ...

    @abstractmethod
    def _remove_leftover(self, leftover: Leftover) -> None: ...

    @abstractmethod
    def _write_record(self, backup: Backup, data: bytes, name: str = VERIFICATION_NAME) -> None:
        """Write a small record file beside the manifest (the verification, or a deletion under way)."""

    @abstractmethod
    def _read_record(self, backup: Backup, name: str = VERIFICATION_NAME) -> bytes | None: ...

    @abstractmethod
    def preflight(self, expected_bytes: int | None = None, *, create: bool = True) -> None:
        """Raise RepoError (what is wrong, what to do) unless a backup of about this size can be written."""

    @property
    def path(self) -> Path:
        """The repository directory (local repositories only; transition API, use ``location``)."""
        raise RepoError(f"the repository {self.location} is not a local directory")

    # --- writing -------------------------------------------------------------------------------------

    def create(self, type: str, source: dict[str, Any], name_hint: str | None = None,
               recipients: Sequence[Recipient | str] | None = None, *,
               created_at: datetime | None = None, cluster: ClusterIdentity | None = None) -> BackupWriter:
        """Start a backup; stream parts into ``open_part()`` and finish with ``commit()``.

        ``recipients``: the age/SSH public keys to encrypt to (default: the repository's, from
        --encrypt-to or the config file); an empty list writes the backup unencrypted.
        ``created_at``: when the data was taken, if that was before now (a snapshot made on a node by a
        schedule and pulled later): retention and ``latest`` go by it, and the ID carries it.
        ``cluster``: the cluster the data is of (``latest`` of a cluster picks only its own backups).
        """
        if not TYPE_PATTERN.fullmatch(type):
            raise RepoError(f"invalid backup type {type!r}")
        keys = self.recipients if recipients is None else tuple(_recipients(recipients))
        now = created_at if created_at is not None else self._clock()
        staging = self._new_staging(ids.check_id(ids.base_id(now, type, name_hint)), exact=False)
        return BackupWriter(staging, type, source, now, self._clock, keys, cluster=cluster)

    def create_copy(self, manifest: Manifest, recipients: Sequence[Recipient] = ()) -> BackupWriter:
        """A writer for a copy of ``manifest``'s backup under the same ID (`backups copy`)."""
        # The ID names the directory or key prefix written: a crafted one must not reach outside the target.
        staging = self._new_staging(ids.check_id(manifest.id), exact=True)
        return BackupWriter(staging, manifest.type, manifest.source, manifest.created_at, self._clock,
                            recipients, template=manifest)

    # --- reading -------------------------------------------------------------------------------------

    def scan(self) -> tuple[builtins.list[Backup], builtins.list[tuple[str, str]]]:
        """Every complete backup once, newest first, and what could not be read as one (with why)."""
        raw, problems = self._scan_raw()
        by_id: dict[str, builtins.list[Backup]] = {}
        for backup in sorted(raw, key=lambda b: b.key):
            by_id.setdefault(backup.id, []).append(backup)
        backups: builtins.list[Backup] = []
        for backup_id, found in by_id.items():
            chosen = next((b for b in found if b.key == backup_id), found[0])
            backups.append(chosen)
            if chosen.key != backup_id:
                problems.append((chosen.location, f"{chosen.location}: its name and its manifest disagree: it holds "
                                 f"backup {backup_id} (listed under that ID)"))
            for other in found:
                if other is not chosen:
                    problems.append((other.location, f"{other.location} holds another copy of backup {backup_id} "
                                     f"(its manifest says {backup_id}): not listed; remove it, or copy it with "
                                     "`kubectl dr backups copy`"))
        backups.sort(key=lambda b: (b.manifest.created_at, b.manifest.id), reverse=True)
        return backups, problems

    def backups(self, type: str | None = None, source_match: dict[str, Any] | None = None) -> builtins.list[Backup]:
        return [b for b in self.scan()[0] if b.manifest.matches(type, source_match)]

    def list(self, type: str | None = None, source_match: dict[str, Any] | None = None) -> builtins.list[Manifest]:
        """Manifests of the complete backups, newest first."""
        return [b.manifest for b in self.backups(type, source_match)]

    def get(self, backup_id: str) -> Backup:
        """The backup with exactly this ID (from its manifest, wherever its container is)."""
        _check_ref(backup_id)
        if not _is_plain_name(backup_id):
            raise BackupNotFoundError(backup_id, self.location)
        fast = self._fetch(backup_id)
        if fast is not None and fast.id == backup_id:
            return fast
        for backup in self.scan()[0]:
            if backup.id == backup_id:
                return backup
        raise BackupNotFoundError(backup_id, self.location)

    def resolve(self, ref: str, type: str | None = None, source_match: dict[str, Any] | None = None, *,
                cluster: str | None = None) -> Backup:
        """A backup from an ID, a unique ID prefix, or ``latest``.

        ``latest`` is the newest backup of ``type`` whose source contains ``source_match`` and, when
        ``cluster`` (a kube-system UID) is given, that records this cluster: never another cluster's, nor
        one that records none (written before backups recorded their cluster). An ID or prefix must also
        be of ``type`` when it is given, and may be of any cluster: the caller says what that means.
        """
        if ref == LATEST:
            candidates = self.backups(type, source_match)
            mine = [b for b in candidates if cluster is None or (b.manifest.cluster is not None
                                                                 and b.manifest.cluster.uid == cluster)]
            if not mine:
                what = f"{type} backup" if type else "backup"
                of = ", ".join(f"{k}={v}" for k, v in (source_match or {}).items())
                where = f" of {self._cluster_text(cluster)}" if cluster is not None else ""
                error = BackupNotFoundError(LATEST, self.location, message=f"there is no {what}"
                                            f"{' of ' + of if of else ''}{where} in {self.location}")
                if candidates:
                    error.hint = _other_clusters_hint(candidates)
                raise error
            return mine[0]
        backup = self._by_id_or_prefix(ref, type)
        if type is not None and backup.manifest.type != type:
            raise WrongBackupTypeError(backup.id, backup.manifest.type, type)
        return backup

    def clusters(self) -> builtins.list[ClusterIdentity]:
        """The clusters the backups here record, newest backup's identity first, one per UID."""
        seen: dict[str, ClusterIdentity] = {}
        for backup in self.scan()[0]:
            if backup.manifest.cluster is not None:
                seen.setdefault(backup.manifest.cluster.uid, backup.manifest.cluster)
        return builtins.list(seen.values())

    def cluster_uid(self, ref: str) -> str:
        """The UID of the cluster ``ref`` (a UID, or a recorded context name or server URL) names here."""
        return pick(ref, self.clusters())

    def _cluster_text(self, uid: str) -> str:
        known = next((c for c in self.clusters() if c.uid == uid), None)
        return f"cluster {describe(known) if known else 'uid ' + uid}"

    def _by_id_or_prefix(self, ref: str, type: str | None) -> Backup:
        _check_ref(ref)
        if _is_plain_name(ref):
            fast = self._fetch(ref)
            if fast is not None and fast.id == ref:
                return fast
        everything = self.scan()[0]
        exact = [b for b in everything if b.id == ref]
        matches = exact or ([b for b in everything if b.id.startswith(ref)] if ref else [])
        if len(matches) > 1 and type is not None:
            # A prefix shared with backups of other types is still unique among the ones that fit.
            typed = [b for b in matches if b.manifest.type == type]
            matches = typed or matches
        if not matches:
            raise BackupNotFoundError(ref, self.location)
        if len(matches) > 1:
            raise AmbiguousBackupError(ref, self.location, [b.id for b in matches])
        return matches[0]

    def open_part(self, backup: Backup, name: str, identity: Sequence[Identity] | None = None,
                  progress: Progress | None = None) -> BinaryIO:
        """The plaintext of a part, streamed (decrypted with ``identity`` or the repository's identities).

        Raises BackupCorruptError when the size or SHA-256 differs, at the latest on the read that
        reaches the end: read it to the end before trusting what came out.
        """
        part = _part(backup, name)
        raw = self._open_stored(backup, part.stored_file)
        return as_binary(PartReader(raw, backup.manifest, part, self._identities(identity), progress))

    def open_stored(self, backup: Backup, name: str, progress: Progress | None = None) -> Any:
        """The stored bytes of a part as they are (the ciphertext of an encrypted part), as a reader whose
        read that reaches the end raises BackupCorruptError if their size or SHA-256 differ (`copy`)."""
        from kubectl_dr.repo.reading import StoredReader

        part = _part(backup, name)
        raw = self._open_stored(backup, part.stored_file)
        return _StoredOnly(StoredReader(raw, backup.id, part, progress))

    def local_file(self, backup: Backup, name: str) -> Path | None:
        """The plaintext part as a local file when it is one (a local, unencrypted backup), else None."""
        part = _part(backup, name)
        if backup.path is None or part.encrypted:
            return None
        return backup.path / part.stored_file

    def _identities(self, identity: Sequence[Identity] | None) -> tuple[Identity, ...]:
        return tuple(identity) if identity else self.identities

    # --- checking ------------------------------------------------------------------------------------

    def verify(self, ref: str | Backup, progress: Progress | None = None, identity: Sequence[Identity] | None = None,
               *, stored_only: bool = False, record: bool = True,
               unrecorded: Callable[[str], None] | None = None) -> Backup:
        """Read every part back and compare its size and SHA-256 with the manifest; raise on a difference.

        An encrypted part is decrypted with ``identity`` (or the repository's identities) and both the
        stored bytes and the plaintext are checked; ``stored_only`` checks only the stored bytes, which
        needs no key. Without a key and without ``stored_only`` an encrypted backup is refused. The
        outcome is recorded next to the manifest (prune keeps the newest backup not found damaged); where it
        cannot be (a read-only copy), ``unrecorded`` is told why. An application backup is whole only with its
        claims' backups: each is verified too (and recorded), and one missing makes it damaged.
        """
        backup = ref if isinstance(ref, Backup) else self.resolve(ref)
        if backup.manifest.type == families.APP_TYPE:
            claims, missing = self.claims_of(backup)
            try:
                if missing:
                    raise BackupCorruptError(backup.id, "record.json", "names claim backups this repository no "
                                             f"longer holds: {', '.join(missing)}")
                for claim in claims:
                    self.verify(claim, progress, identity, stored_only=stored_only, record=record,
                                unrecorded=unrecorded)
            except BackupCorruptError as exc:
                if record:
                    self._record(backup, ok=False, contents=not stored_only, problem=exc.message,
                                 unrecorded=unrecorded)
                raise
        keys = self._identities(identity)
        encrypted = any(p.encrypted for p in backup.manifest.parts)
        if encrypted and not keys and not stored_only:
            raise EncryptedBackupError(backup.id, _manifest_recipients(backup.manifest), "checking its contents")
        try:
            for part in backup.manifest.parts:
                raw = self._open_stored(backup, part.stored_file)
                if part.encrypted and not stored_only:
                    with PartReader(raw, backup.manifest, part, keys, progress) as reader:
                        reader.read_to_end()
                else:
                    read_stored(raw, backup.manifest, part, progress)
        except BackupCorruptError as exc:
            if record:
                self._record(backup, ok=False, contents=not stored_only, problem=exc.message, unrecorded=unrecorded)
            raise
        if record:
            self._record(backup, ok=True, contents=not stored_only or not encrypted, unrecorded=unrecorded)
        return backup

    def _record(self, backup: Backup, *, ok: bool, contents: bool, problem: str | None = None,
                unrecorded: Callable[[str], None] | None = None) -> None:
        data = {"apiVersion": "kubectl-dr/v1", "kind": "Verification", "id": backup.id,
                "verifiedAt": format_time(self._clock()), "ok": ok, "contentsChecked": contents,
                "problem": problem, "toolVersion": __version__}
        # A read-only copy of a repository can still be verified; the record is a convenience, and its absence
        # is told to whoever asked.
        try:
            self._write_record(backup, (json.dumps(data, indent=2) + "\n").encode())
        except (OSError, RepoError) as exc:
            if unrecorded is not None:
                unrecorded(exc.strerror or str(exc) if isinstance(exc, OSError) else exc.message)

    def verification(self, backup: Backup) -> Verification | None:
        """The last recorded verification of a backup, if any (a record that does not read as one: none)."""
        try:
            raw = self._read_record(backup)
            return Verification.from_dict(json.loads(raw)) if raw else None
        except (OSError, RepoError, ValueError, TypeError):
            return None

    def intact(self, backup: Backup) -> bool:
        """Not found damaged by its last verification, and every part present with its stored size."""
        record = self.verification(backup)
        if record is not None and not record.ok:
            return False
        try:
            sizes = self._stored_sizes(backup)
        except (OSError, RepoError):
            return False
        return all(sizes.get(p.stored_file) == p.stored_size for p in backup.manifest.parts)

    # --- removing ------------------------------------------------------------------------------------

    def delete(self, ref: str | Backup) -> Manifest:
        """Remove one backup, given by its exact ID, and, for an application backup, its claims' backups
        (`deletion_plan`). It disappears from listings at once; a claim's backup that an application
        backup names is refused (PartOfAppBackupError)."""
        backup = ref if isinstance(ref, Backup) else self.get(ref)
        self.delete_planned(self.deletion_plan(backup))
        return backup.manifest

    def deletion_plan(self, backup: Backup) -> DeletionPlan:
        """What deleting ``backup`` takes: itself and, for an application backup, its claims' backups that
        no other application backup names. Refused for a claim's backup that a live application backup names."""
        everything, by_id, family = self._families()
        dying = {b.id for b in everything if b.manifest.type == families.APP_TYPE and self.deleting(b)}
        owners = family.owners_except(backup.id, dying)
        if owners:
            raise PartOfAppBackupError(backup.id, owners)
        claims: builtins.list[Backup] = []
        shared: dict[str, builtins.list[str]] = {}
        for claim in family.claims.get(backup.id, []):
            others = family.owners_except(claim, dying | {backup.id})
            if others:
                shared[claim] = others
            else:
                claims.append(by_id[claim])
        return DeletionPlan(backup, claims, family.missing.get(backup.id, []), shared)

    def delete_planned(self, plan: DeletionPlan) -> None:
        """Delete in the order that leaves, at every step, either a whole application backup or one marked
        as being deleted: the mark first, then its claims' backups, then the backup itself. A rerun (or a
        prune) finishes what an interruption left."""
        if plan.claims:
            self._mark_deleting(plan.backup, [c.id for c in plan.claims])
        for claim in plan.claims:
            with contextlib.suppress(BackupNotFoundError):  # gone already: a rerun after an interruption
                self._remove(claim)
        self._remove(plan.backup)

    def _families(self) -> tuple[builtins.list[Backup], dict[str, Backup], families.Families]:
        """Every backup, by ID, and which application backup's claims each one holds."""
        everything = self.scan()[0]
        return everything, {b.id: b for b in everything}, families.families(b.manifest for b in everything)

    def claims_of(self, backup: Backup) -> tuple[builtins.list[Backup], builtins.list[str]]:
        """An application backup's claims' backups, and the IDs of those it names that are gone."""
        _, by_id, family = self._families()
        return [by_id[c] for c in family.claims.get(backup.id, [])], family.missing.get(backup.id, [])

    def with_claims(self, chosen: Sequence[Backup]) -> builtins.list[Backup]:
        """``chosen``, each application backup preceded by its claims' backups (once each): what a copy
        takes, in the order that never shows an application backup whose claims' data is not there yet."""
        _, by_id, family = self._families()
        # Copied without its claims' data, or without the mark of a delete under way, an application backup
        # would look whole in the target, where nothing finishes the delete: refused, by name.
        broken = []
        for b in chosen:
            if b.manifest.type != families.APP_TYPE:
                continue
            if self.deleting(b):
                broken.append(f"{b.id} (being deleted)")
            elif b.id in family.missing:
                broken.append(f"{b.id} (its claims' backups {', '.join(family.missing[b.id])} are gone)")
        if broken:
            raise RepoError(f"not copying application backups that are not whole: {'; '.join(broken)}",
                            hint="Finish a delete under way with `kubectl dr backups delete ID`; an application "
                                 "backup whose claims' backups are gone cannot be restored anywhere. Copy the "
                                 "other backups by ID.")
        out: dict[str, Backup] = {}
        for backup in chosen:
            for claim in family.claims.get(backup.id, []):
                out.setdefault(claim, by_id[claim])
            out.setdefault(backup.id, backup)
        return builtins.list(out.values())

    def _mark_deleting(self, backup: Backup, claims: builtins.list[str]) -> None:
        record = families.deletion_record(backup.manifest, claims, format_time(self._clock()), __version__)
        self._write_record(backup, (json.dumps(record, indent=2) + "\n").encode(), DELETION_NAME)

    def deleting(self, backup: Backup) -> bool:
        """Whether a delete of this backup (and its claims' backups) began and did not finish: it is never
        to be restored, and a delete or a prune finishes it. Any record there counts, whatever it holds."""
        try:
            return self._read_record(backup, DELETION_NAME) is not None
        except (OSError, RepoError) as exc:  # absent reads as None; anything else is not a "no"
            raise RepoError(f"cannot tell whether backup {backup.id} is being deleted: reading its "
                            f"{DELETION_NAME} failed: {getattr(exc, 'message', None) or exc}",
                            hint="Check the repository's permissions and connection, then run the command again.") \
                from None

    def prune(self, policy: Policy | int | None = None, type: str | None = None,
              source_match: dict[str, Any] | None = None, dry_run: bool = False, *, keep_last: int | None = None,
              tz: tzinfo | None = None) -> PruneResult:
        """Remove the backups no rule keeps, per series, and the stale leftovers of interrupted writes.

        ``policy`` is a retention Policy or, as before, a keep-last count. The newest backup of each
        series that is intact (not found damaged, every part there) is always kept. A backup that cannot
        be removed is reported in ``failed`` and the others are still removed.
        """
        if policy is None:
            policy = Policy() if keep_last is None else keep_last
        if isinstance(policy, int):
            if policy < 0:
                raise RepoError(f"--keep-last must be 0 or more, not {policy}")
            policy = Policy(last=policy)
        if policy.empty:
            raise RepoError("no retention rule given: nothing would be kept",
                            hint="Give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
                            "--keep-monthly, --keep-yearly.")
        everything, by_id, family = self._families()
        # Interrupted deletes of application backups are finished, whatever the rules (they are never
        # restored again); a claim's backup goes or stays with the application backups that name it.
        dying = [b.id for b in everything if b.manifest.type == families.APP_TYPE and self.deleting(b)]
        chosen = [b for b in everything if b.manifest.matches(type, source_match)
                  and b.id not in family.owners and b.id not in dying]

        def whole(backup: Backup) -> bool:
            claims = family.claims.get(backup.id, [])
            return (self.intact(backup) and backup.id not in family.missing
                    and all(self.intact(by_id[c]) for c in claims))

        decisions: builtins.list[Decision] = plan([b.manifest for b in chosen], policy, tz=tz,
                                                  intact=lambda m: whole(by_id[m.id]))
        result = PruneResult()
        from kubectl_dr.repo.retention import series_key

        for d in decisions:
            result.series[d.manifest.id] = series_key(d.manifest)
            if d.keep:
                result.kept.append(d.manifest.id)
                result.reasons[d.manifest.id] = d.reasons
            else:
                result.removed.append(d.manifest.id)
        for app in dying:
            result.series[app] = series_key(by_id[app].manifest)
            result.removed.append(app)
            result.finishing.append(app)
        going = set(result.removed)
        for claim, apps in family.owners.items():
            result.series[claim] = series_key(by_id[claim].manifest)
            staying = [a for a in apps if a not in going]
            if staying:
                result.kept.append(claim)
                result.reasons[claim] = [f"claim of app backup {a}" for a in staying]
            else:
                result.removed.append(claim)
                result.follows[claim] = apps[0]
        stale = [lo for lo in self.leftovers() if lo.stale]
        result.leftovers = [lo.name for lo in stale]
        if not dry_run:
            self._remove_pruned(result, by_id, family)
            for leftover in stale:
                try:
                    self._remove_leftover(leftover)
                except (OSError, RepoError) as exc:
                    result.failed.append((leftover.name, getattr(exc, "message", None) or str(exc)))
        return result

    def _remove_pruned(self, result: PruneResult, by_id: dict[str, Backup], family: families.Families) -> None:
        """Application backups first marked, then every other backup removed (their claims' backups among
        them), then the application backups whose claims' backups all went: an interruption anywhere leaves
        each application backup whole or marked as being deleted, which the next prune finishes."""
        apps = [i for i in result.removed if by_id[i].manifest.type == families.APP_TYPE]
        for app in apps:
            claims = [c for c in family.claims.get(app, []) if c in result.follows]
            if claims and app not in result.finishing:
                try:
                    self._mark_deleting(by_id[app], claims)
                except (OSError, RepoError) as exc:  # unmarked: neither it nor its claims' backups may go
                    result.failed.append((app, getattr(exc, "message", None) or str(exc)))
        unmarked = {name for name, _ in result.failed}
        # A claim's backup goes only when every application backup naming it was marked (not only the first).
        others = [i for i in result.removed if i not in apps and not unmarked.intersection(family.owners.get(i, []))]
        self._remove_all(others, result, by_id)
        failed = {name for name, _ in result.failed}
        ready = [a for a in apps if a not in failed
                 and not any(c in failed for c in family.claims.get(a, []) if c in result.follows)]
        self._remove_all(ready, result, by_id)

    def _remove_all(self, names: builtins.list[str], result: PruneResult, by_id: dict[str, Backup]) -> None:
        doomed = [by_id[i] for i in names]
        wanted = set(names)
        for _ in range(_MAX_COPIES):
            for backup in doomed:
                try:
                    self._remove(backup)
                except (OSError, RepoError) as exc:
                    result.failed.append((backup.id, getattr(exc, "message", None) or str(exc)))
            # Another copy of a removed backup (a copied directory) surfaces once the first is gone.
            failed = {name for name, _ in result.failed}
            doomed = [b for b in self.scan()[0] if b.id in wanted and b.id not in failed]
            if not doomed:
                break

    def stale_temp_dirs(self) -> builtins.list[str]:
        """Names of what writers that no longer run (and deletions cut short) left behind."""
        return [lo.name for lo in self.leftovers() if lo.stale]


class _StoredOnly:
    """Reads stored bytes (ciphertext) and checks only their size and SHA-256 at EOF."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._checked = False

    def readinto(self, buffer: Any) -> int:
        n = int(self._reader.readinto(memoryview(buffer).cast("B")))
        if n == 0 and not self._checked:
            self._checked = True
            self._reader.check()
        return n

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(1 << 20 if size < 0 else size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> _StoredOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _part(backup: Backup, name: str) -> Part:
    try:
        return backup.manifest.part(name)
    except KeyError:
        raise RepoError(f'backup "{backup.id}" has no part "{name}" '
                        f"(it has: {', '.join(p.name for p in backup.manifest.parts) or 'none'})") from None


def _recipients(values: Sequence[Recipient | str]) -> builtins.list[Recipient]:
    texts = [v for v in values if isinstance(v, str)]
    parsed = parse_recipients(texts) if texts else []
    return [v for v in values if isinstance(v, Recipient)] + parsed


def _manifest_recipients(manifest: Manifest) -> builtins.list[str]:
    return [str(r) for r in (manifest.encryption or {}).get("recipients", [])]


def _other_clusters_hint(candidates: builtins.list[Backup]) -> str:
    """Where the backups that `latest` passed over are from, and how to pick one of them on purpose."""
    older = [b.id for b in candidates if b.manifest.cluster is None]
    others: dict[str, ClusterIdentity] = {}
    for b in candidates:
        if b.manifest.cluster is not None:
            others.setdefault(b.manifest.cluster.uid, b.manifest.cluster)
    said = []
    if others:
        said.append("backups of other clusters: " + "; ".join(describe(c) for c in others.values())
                    + " (the newest of one: --from latest --from-cluster NAME|UID)")
    if older:
        shown = ", ".join(older[:3]) + (", …" if len(older) > 3 else "")
        said.append(f"{len(older)} that {OLDER_NOTE} ({shown}): `latest` never picks those, give one by --from ID")
    return "Here are " + "; ".join(said) + "."


def _is_plain_name(ref: str) -> bool:
    return ids.id_problem(ref) is None


def _check_ref(ref: str) -> None:
    """An ID (or prefix) given by the user that no backup can have is a clear error, not a path to try."""
    problem = ids.name_problem(ref) if ref else None
    if problem is not None and ("bytes long" in problem or "NUL" in problem):
        shown = ref if len(ref) <= 60 else f"{ref[:40]}…"
        raise RepoError(f"{shown!r} is not a valid backup ID: {problem}", hint="Run \"kubectl dr backups list\" to "
                        "see the backups.")


__all__ = ["LATEST", "MANIFEST_NAME", "Backup", "Leftover", "ManifestError", "PruneResult", "Repository"]
