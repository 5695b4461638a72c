"""What a cron or systemd entry needs to write a restic repository unattended: where its password comes from.

An entry is a line in a crontab or a unit file, both readable by whoever can read the user's files (and a
crontab is copied into the cron daemon's spool). So the password itself is never written: the entry names a
password file (`--password-file`, mode 0600, like an ssh key) or a password command (RESTIC_PASSWORD_COMMAND,
e.g. `pass show restic/prod`: a command, not a secret). RESTIC_PASSWORD in the environment of `print` is refused,
and so is a rest: URL carrying its password: writing either down would store the password in plain text.
Nothing of this goes into the cluster: a CronJob there would need the password as a Secret, which is base64, not
encryption, for everyone who may read Secrets in its namespace.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr.errors import UsageError

# Names passed into restic entries when set where `print` runs: where things are, never secrets.
PASS_ENV = ("RESTIC_CACERT", "RESTIC_CACHE_DIR", "RESTIC_REST_USERNAME", "AZURE_ACCOUNT_NAME",
            "AZURE_ENDPOINT_SUFFIX")
WHATS = ("etcd-pull", "pvc-backup", "prune")
HOW = ("--password-file FILE (mode 0600) or --password-command CMD (RESTIC_PASSWORD_COMMAND, e.g. 'pass show "
       "restic/prod')")


@dataclass(frozen=True)
class PasswordSource:
    """Exactly one of a password file (an absolute path) and a password command."""

    file: str | None = None
    command: str | None = None

    def argv(self) -> list[str]:
        return ["--password-file", self.file] if self.file else []

    def env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD_COMMAND": self.command} if self.command else {}

    def describe(self) -> str:
        return f"the password file {shlex.quote(self.file)}" if self.file else f"the password command {self.command!r}"


def password_source(env: Mapping[str, str], *, file: str | None, command: str | None) -> PasswordSource:
    """Where an unattended run reads the password: the flags, else RESTIC_PASSWORD_FILE or
    RESTIC_PASSWORD_COMMAND as set now; refused when only RESTIC_PASSWORD (the password itself) is."""
    if file and command:
        raise UsageError("--password-file and --password-command are mutually exclusive (as in restic): give one")
    if not file and not command:
        file = env.get("RESTIC_PASSWORD_FILE") or None
        command = env.get("RESTIC_PASSWORD_COMMAND") or None
        if file and command:
            raise UsageError("RESTIC_PASSWORD_FILE and RESTIC_PASSWORD_COMMAND are both set, which restic refuses: "
                             f"give {HOW}")
    if command:
        if not command.strip():
            raise UsageError(f"--password-command is empty: give {HOW}")
        return PasswordSource(command=command.strip())
    if file:
        return PasswordSource(file=_checked_file(file))
    if env.get("RESTIC_PASSWORD"):
        raise UsageError("the restic password is in RESTIC_PASSWORD, which an entry would have to store in plain "
                         f"text (a crontab, a unit file): give {HOW} instead; the entry names the file or command, "
                         "never the password")
    raise UsageError(f"a scheduled run of a restic repository needs its password without a terminal: give {HOW}")


def _checked_file(file: str) -> str:
    path = Path(file).expanduser().absolute()
    try:
        info = path.stat()
    except OSError as exc:
        raise UsageError(f"--password-file {file}: {exc.strerror}; an entry names the file, which must exist "
                         "when it runs") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"--password-file {file} is not a regular file")
    if info.st_mode & 0o077:
        raise UsageError(f"--password-file {file} can be read by others (mode {stat.S_IMODE(info.st_mode):04o}): "
                         f"a password file must be the owner's only, run chmod 600 {path}")
    if not os.access(path, os.R_OK) or info.st_size == 0:
        raise UsageError(f"--password-file {file} is empty or unreadable")
    return str(path)


def check_repository(ref: str, whats: list[str], *, encrypt_to: list[str], to: str | None) -> None:
    """The combinations a restic repository cannot take, each refused with what to do instead."""
    from urllib.parse import urlsplit

    spec = ref.removeprefix("restic:")
    if spec.startswith("rest:"):
        try:
            has_password = urlsplit(spec[len("rest:"):]).password is not None
        except ValueError:
            has_password = False
        if has_password:
            raise UsageError("the rest: URL holds a password, which the entry would store in plain text: give the "
                             "URL without it and the password as RESTIC_REST_PASSWORD in the systemd unit's "
                             "private environment file (with RESTIC_REST_USERNAME), or use rest-server without "
                             "authentication behind a private network")
    if encrypt_to:
        raise UsageError("--encrypt-to does not apply to a restic repository: restic encrypts every repository "
                         "with its password")
    if "copy" in whats:
        raise UsageError("--what copy copies kubectl dr repositories; with a restic repository schedule "
                         "`restic copy --from-repo …` yourself (it copies restic snapshots between repositories)",)
    other = [w for w in whats if w not in WHATS]
    if other:
        raise UsageError(f"--what {', '.join(other)} does not apply to a restic repository: choose from "
                         f"{', '.join(WHATS)}")
    if to:
        raise UsageError("--to is where `copy` copies to; a restic repository is not copied by kubectl dr")


def is_restic_job(repo: str | None) -> bool:
    return bool(repo) and str(repo).startswith("restic:")
