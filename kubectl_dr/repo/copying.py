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
