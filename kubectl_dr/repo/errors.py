"""What can go wrong with the backup repository, each with what to do about it."""

from __future__ import annotations

from pathlib import Path

from kubectl_dr.errors import DrError, VerificationError

LIST_HINT = 'Run "kubectl dr backups list" to see the backups.'


class RepoError(DrError):
    """A backup repository problem the user can act on."""


class BackupNotFoundError(RepoError):
    def __init__(self, ref: str, repo: Path, what: str = "backup", message: str | None = None) -> None:
        super().__init__(message or f'{what} "{ref}" not found in {repo}', hint=LIST_HINT)
        self.ref = ref
        self.repo = repo


class AmbiguousBackupError(RepoError):
    def __init__(self, ref: str, repo: Path, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:5]) + (", …" if len(candidates) > 5 else "")
        super().__init__(
            f'"{ref}" matches {len(candidates)} backups in {repo}: {shown}',
            hint="Give more characters of the ID, or the whole ID.",
        )
        self.ref = ref
        self.candidates = candidates


class WrongBackupTypeError(RepoError):
    def __init__(self, backup_id: str, actual: str, wanted: str) -> None:
        super().__init__(f'backup "{backup_id}" is a {actual} backup, not a {wanted} backup', hint=LIST_HINT)


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

    def __init__(self, where: Path, written: int, part: str) -> None:
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
