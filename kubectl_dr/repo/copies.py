"""`--copy-to REPO` on the jobs that make a backup: a second, off-site copy as part of the same run.

The target is opened and checked (reachable, writable; asked about plaintext secrets) before the
cluster is touched, so a typo in the bucket does not surface after a ten-minute backup. The copy runs
after the backup is committed, through the same verified copy as `kubectl dr backups copy`; when it
fails, the backup stays in the first repository and the error says the one command that finishes the
job.
"""

from __future__ import annotations

import os
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.repo import Repository, open_repository
from kubectl_dr.repo.safety import confirm_plaintext_secrets


def open_targets(targets: list[str] | None, source: Repository, *, s3_endpoint: str | None,
                 azure_endpoint: str | None = None, encrypt_to: list[str] | None, dry_run: str, console: Console,
                 secret_what: str | None) -> list[Repository]:
    """The --copy-to repositories, checked now; `secret_what` names a backup that carries Secrets."""
    opened = []
    for ref in targets or []:
        target = open_repository(ref, os.environ, s3_endpoint=s3_endpoint, azure_endpoint=azure_endpoint,
                                 recipients=encrypt_to, option="--copy-to")
        if target.place == source.place:
            raise DrError(f"--copy-to {ref} is the repository the backup is written to",
                          hint="Name another repository (an S3 bucket, an Azure container, another disk).")
        target.preflight(create=dry_run == "none")
        if secret_what is not None and dry_run == "none":
            confirm_plaintext_secrets(target, secret_what, console)
        opened.append(target)
    return opened


def copy_new(source: Repository, backup_id: str, targets: list[Repository],
             console: Console) -> list[dict[str, Any]]:
    """Copy the backup just made into every target; what was copied where, for the command's output."""
    from kubectl_dr.repo.copying import copy_backup

    done: list[dict[str, Any]] = []
    for target in targets:
        backup = source.get(backup_id)
        try:
            with console.progress(f"copy {backup_id}", sum(p.stored_size for p in backup.manifest.parts)) as bar:
                result = copy_backup(source, backup, target, recipients=target.recipients, progress=bar.advance)
        except DrError as exc:
            exc.hint = ((exc.hint + " ") if exc.hint else "") + (
                f"The backup itself is stored in {source.location}; finish the copy with: kubectl dr backups copy "
                f"{backup_id} --repo {source.location} --to {target.location}")
            raise
        console.say(f'backup "{backup_id}" copied to {result.location}' + (" (encrypted)" if result.encrypted else ""))
        done.append({"repository": target.location, "location": result.location, "encrypted": result.encrypted})
    return done
