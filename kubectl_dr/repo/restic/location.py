"""`--repo restic:REPO`: REPO is restic's own repository string (a path, `s3:https://host/bucket/prefix`,
`azure:container:/prefix` or `rest:https://user:pass@host:port/path/`),
so the same string works with `restic -r REPO`. The password is found as restic finds it: a password
command, else a password file (--password-file or RESTIC_PASSWORD_FILE), else RESTIC_PASSWORD.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic.backend import Backend, LocalBackend
from kubectl_dr.repo.s3client import S3Settings

if TYPE_CHECKING:  # the format (cryptography, zstandard) is imported only when a restic repository is used
    from kubectl_dr.repo.azureclient import AzureSettings
    from kubectl_dr.repo.restic.repository import Repository

PREFIX = "restic:"
PASSWORD_HINT = ("Give the repository's password as restic reads it: RESTIC_PASSWORD, RESTIC_PASSWORD_FILE, "
                 "RESTIC_PASSWORD_COMMAND, or --password-file FILE.")


def is_restic(ref: str | None) -> bool:
    return bool(ref) and str(ref).startswith(PREFIX)


def shown(ref: str) -> str:
    """A restic repository as output names it: `restic:REPO`, what `--repo` takes back, with a password in a
    rest: URL replaced by *** as restic prints it (a plan or a result may be kept in a log or a ticket)."""
    spec = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    if spec.startswith("rest:"):
        from kubectl_dr.repo.restic.restbackend import redact

        spec = redact(spec)
    return PREFIX + spec


def backend_for(ref: str, s3: S3Settings | None = None, env: Mapping[str, str] | None = None,
                azure: AzureSettings | None = None) -> Backend:
    spec = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    if not spec:
        raise RepoError("--repo restic: needs restic's repository string after it, e.g. restic:/srv/restic or "
                        "restic:s3:https://s3.example.com/bucket/prefix")
    if spec.startswith("s3:"):
        from kubectl_dr.repo.restic.s3backend import S3Backend

        return S3Backend(spec, s3 or S3Settings())
    if spec.startswith("azure:"):
        from kubectl_dr.repo.restic.azurebackend import AzureBackend, settings_for

        return AzureBackend(spec, azure or settings_for(env or {}))
    if spec.startswith("rest:"):
        from kubectl_dr.repo.restic.restbackend import RestBackend

        return RestBackend(spec, env)
    if ":" in spec.split("/", 1)[0]:
        scheme = spec.split(":", 1)[0]
        raise RepoError(f"restic repositories of kind {scheme!r} are not supported by kubectl dr yet",
                        hint="Use a local path, s3:https://HOST/BUCKET/PREFIX, azure:CONTAINER:/PREFIX or "
                             "rest:https://HOST/PATH/ "
                             "(restic copy moves snapshots between repositories).")
    return LocalBackend(Path(spec).expanduser())


def read_password(env: Mapping[str, str], password_file: str | None = None) -> bytes:
    command = env.get("RESTIC_PASSWORD_COMMAND", "")
    file = password_file or env.get("RESTIC_PASSWORD_FILE", "")
    if command and file:
        raise RepoError("a password command and a password file are mutually exclusive (as in restic)",
                        hint="Unset RESTIC_PASSWORD_COMMAND or the password file.")
    if command:
        try:
            proc = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            raise RepoError(f"the password command {command!r} failed: {exc}", hint=PASSWORD_HINT) from None
        if proc.returncode != 0:
            raise RepoError(f"the password command {command!r} exited with {proc.returncode}: "
                            f"{proc.stderr.decode(errors='replace').strip()}", hint=PASSWORD_HINT)
        password = proc.stdout.strip()
    elif file:
        try:
            password = Path(file).expanduser().read_bytes().strip()
        except OSError as exc:
            raise RepoError(f"cannot read the password file {file}: {exc.strerror}", hint=PASSWORD_HINT) from None
    else:
        password = env.get("RESTIC_PASSWORD", "").encode()
    if not password:
        raise RepoError("no password for the restic repository", hint=PASSWORD_HINT)
    return password


def open_repository(ref: str, env: Mapping[str, str], *, password_file: str | None = None,
                    s3: S3Settings | None = None, azure: AzureSettings | None = None,
                    create: Callable[[str], bool] | None = None) -> Repository:
    """Opens the repository; when it does not exist, `create(description)` decides whether to `init` it
    (None: it must exist)."""
    from kubectl_dr.repo.restic.repository import Repository

    backend = backend_for(ref, s3, env, azure)
    password = read_password(env, password_file)
    if backend.exists():
        return Repository.open(backend, password)
    if create is None or not create(backend.describe()):
        # A backend may know why (Azure: the container itself is missing).
        why = str(getattr(backend, "missing_hint", "") or "")
        hint = (f"Create it with `restic -r {backend.describe()} init`, or back up into it with kubectl dr pvc "
                "backup (which offers to create it).")
        raise RepoError(f"there is no restic repository at {backend.describe()}",
                        hint=f"{why} {hint}" if why else hint)
    return Repository.init(backend, password)
