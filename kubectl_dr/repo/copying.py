"""`backups copy`: a backup from one repository into another, under the same ID, checked on the way.

The stored bytes are copied as they are (an encrypted backup stays encrypted, no key needed) and the
manifest is the source's, byte for byte. The source is checked as it is read (size and SHA-256 of every
part against its manifest), the copy as it is written (the same digests, S3's per-part checksums, the
stored size read back), and the copy only becomes visible with its manifest, written last. An
interrupted copy leaves nothing visible; running it again removes what the killed copy left and
finishes it. With recipients, an unencrypted backup is encrypted on the way (its plaintext digests
stay those of the original).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.repo.crypto import Identity, Recipient
from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.reading import CHUNK, Progress
from kubectl_dr.repo.repository import Backup, Repository


@dataclass(frozen=True)
class CopyResult:
    id: str
    status: str  # "copied" | "present"
    location: str
    encrypted: bool


def copy_backup(source: Repository, backup: Backup, target: Repository, *, recipients: Sequence[Recipient] = (),
                identity: Sequence[Identity] | None = None, progress: Progress | None = None) -> CopyResult:
    encrypt = bool(recipients) and not any(p.encrypted for p in backup.manifest.parts)
    present = _present(target, backup)
    if present is not None:
        return CopyResult(backup.id, "present", target.backup_location(backup.id), present)
    buf = memoryview(bytearray(CHUNK))
    with target.create_copy(backup.manifest, recipients if encrypt else ()) as writer:
        for part in backup.manifest.parts:
            if encrypt:
                with source.open_part(backup, part.name, identity, progress) as stream, \
                        writer.open_part(part.name, size_hint=part.size) as out:
                    while chunk := stream.read(CHUNK):
                        out.write(chunk)
            else:
                reader = source.open_stored(backup, part.name, progress)
                try:
                    with writer.open_copied_part(part) as out:
                        while n := reader.readinto(buf):
                            out.write(buf[:n])
                finally:
                    reader.close()
        written = writer.commit()
    return CopyResult(written.id, "copied", target.backup_location(written.id), written.encryption is not None)


def present_in(target: Repository, backup: Backup) -> bool:
    """Whether the target already has this backup: what a dry run reports as `present` rather than
    `would copy`, so that its rows are the real copy's."""
    return _present(target, backup) is not None


def _present(target: Repository, backup: Backup) -> bool | None:
    """Whether the target already has this backup (and if it is encrypted there); an ID that is there
    with other contents is an error, never overwritten."""
    try:
        there = target.get(backup.id)
    except RepoError:
        return None
    ours = [(p.name, p.size, p.sha256) for p in backup.manifest.parts]
    theirs = [(p.name, p.size, p.sha256) for p in there.manifest.parts]
    if ours != theirs or there.manifest.type != backup.manifest.type:
        raise RepoError(f"{target.backup_location(backup.id)} holds a different backup under the ID {backup.id}",
                        hint="Nothing was overwritten; compare them with kubectl dr backups show.")
    return there.manifest.encryption is not None


@dataclass(frozen=True)
class CopyRow:
    """One backup of a `backups copy`: what happened to it (copied, copied (encrypted), present, would copy)."""

    id: str
    result: str
    location: str


@dataclass
class CopyRun:
    """Every backup of one `backups copy`, in order, for the command to render."""

    target: str
    dry_run: bool
    rows: list[CopyRow]

    @property
    def copied(self) -> list[str]:
        return [r.id for r in self.rows if r.result not in ("present",)]

    @property
    def present(self) -> list[str]:
        return [r.id for r in self.rows if r.result == "present"]

    def to_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "present": self.present, "dryRun": self.dry_run, "target": self.target}


def copy_all(source: Repository, chosen: Sequence[Backup], target: Repository, console: Console, *,
             dry_run: bool = False) -> CopyRun:
    """Copy every chosen backup the target does not have yet (a dry run only says which it would), each with
    a progress display; the target is checked for room first."""
    if dry_run:
        there = {b.id for b in chosen if present_in(target, b)}
        return CopyRun(target.location, True, [
            CopyRow(b.id, "present" if b.id in there else "would copy", target.backup_location(b.id)) for b in chosen])
    target.preflight(sum(b.manifest.size for b in chosen))
    rows: list[CopyRow] = []
    for b in chosen:
        with console.progress(f"copy {b.id}", sum(p.stored_size for p in b.manifest.parts)) as bar:
            result = copy_backup(source, b, target, recipients=target.recipients, progress=bar.advance)
        if result.status == "present":
            rows.append(CopyRow(result.id, "present", target.backup_location(result.id)))
        else:
            enc = " (encrypted)" if result.encrypted and b.manifest.encryption is None else ""
            rows.append(CopyRow(result.id, f"copied{enc}", result.location))
    return CopyRun(target.location, False, rows)
