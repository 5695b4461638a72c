"""What can go wrong with the backup repository, each with what to do about it."""

from __future__ import annotations

from pathlib import Path

from kubectl_dr.errors import DrError, VerificationError

LIST_HINT = 'Run "kubectl dr backups list" to see the backups.'


class RepoError(DrError):
    """A backup repository problem the user can act on."""


class BackupNotFoundError(RepoError):
    def __init__(self, ref: str, repo: Path | str, what: str = "backup", message: str | None = None) -> None:
        super().__init__(message or f'{what} "{ref}" not found in {repo}', hint=LIST_HINT)
        self.ref = ref
        self.repo = repo


class AmbiguousBackupError(RepoError):
    def __init__(self, ref: str, repo: Path | str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:5]) + (", …" if len(candidates) > 5 else "")
        super().__init__(
            f'"{ref}" matches {len(candidates)} backups in {repo}: {shown}',
            hint="Give more characters of the ID, or the whole ID.",
        )
        self.ref = ref
        self.candidates = candidates


class WrongBackupTypeError(RepoError):
    def __init__(self, backup_id: str, actual: str, wanted: str) -> None:
        def article(kind: str) -> str:
            return "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"

        hint = (f"`kubectl dr backups show {backup_id}` shows what it holds (its objects and its claims' backups); "
                f"{LIST_HINT[0].lower()}{LIST_HINT[1:]}" if actual == "app" else LIST_HINT)
        super().__init__(f'backup "{backup_id}" is {article(actual)} {actual} backup, not {article(wanted)} {wanted} '
                         'backup', hint=hint)


class ManifestError(RepoError):
    """A manifest is missing, unreadable, or not one this version understands."""


class BackupCorruptError(VerificationError):
    """A part's size or SHA-256 differs from the manifest: the backup must not be restored."""

    def __init__(self, backup_id: str, part: str, problem: str) -> None:
        super().__init__(
            f'backup "{backup_id}" is damaged: part "{part}" {problem}',
            hint="Do not restore from it; use another backup (kubectl dr backups list).",
        )
        self.backup_id = backup_id
        self.part = part


class DiskFullError(RepoError):
    """The repository's file system ran out of space (or quota) while a backup was written."""

    def __init__(self, where: Path | str, written: int, part: str) -> None:
        super().__init__(
            f'no space left on the device holding {where}: wrote {written} bytes of part "{part}" '
            "before the disk filled up; the incomplete backup was removed",
            hint="Free some space (kubectl dr backups prune --keep-last N) or choose another repository "
            "with --repo or KUBECTL_DR_REPO.",
        )
        self.where = where
        self.written = written
        self.part = part


class WriterStateError(RepoError):
    """A backup writer was used out of order (a programming error, reported plainly)."""


class EncryptedBackupError(RepoError):
    """An encrypted part was asked for without an identity that opens it."""

    def __init__(self, backup_id: str, recipients: list[str], doing: str) -> None:
        to = ", ".join(_short_key(r) for r in recipients) or "unknown recipients"
        super().__init__(
            f'backup "{backup_id}" is encrypted (age, to {to}): {doing} needs the matching private key',
            hint="Pass --identity FILE (an age identity file or an SSH private key), or set "
            "encryption.identities in the kubectl-dr config file.",
        )
        self.backup_id = backup_id


class StaleWriterError(RepoError):
    """Another writer holds this backup ID (a copy or backup of it is running)."""


def _short_key(key: str) -> str:
    """age1abc…xyz or ssh-ed25519 AAAA…xyz: enough to tell keys apart in a message."""
    fields = key.split()
    body = fields[1] if len(fields) > 1 else fields[0] if fields else key
    short = body if len(body) <= 20 else f"{body[:10]}…{body[-8:]}"
    return f"{fields[0]} {short}" if len(fields) > 1 else short


class PartOfAppBackupError(RepoError):
    """A claim's backup that an application backup names: it goes with that backup, never alone."""

    def __init__(self, backup_id: str, apps: list[str]) -> None:
        which = ", ".join(f'"{a}"' for a in apps)
        super().__init__(
            f'backup "{backup_id}" holds a claim\'s data for application backup {which}: deleting it alone would '
            "leave that backup unrestorable",
            hint=f"Delete the application backup, which takes its claims' backups with it: kubectl dr backups "
                 f"delete {apps[0]}" + (" (and the others named)" if len(apps) > 1 else ""),
        )
        self.backup_id = backup_id
        self.apps = apps
