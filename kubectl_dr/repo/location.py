"""Where the backup repository lives: --repo, then KUBECTL_DR_REPO, then the config file, then the XDG
data directory. A value starting with s3:// names an S3 repository, azure:// an Azure Blob one; any other
scheme (gs://, restic:) is refused rather than taken as a directory named "gs:" under the current one;
anything else is a local directory."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from kubectl_dr.errors import UsageError
from kubectl_dr.repo.azureclient import SCHEME as AZURE_SCHEME
from kubectl_dr.repo.s3client import SCHEME

REMOTE_SCHEMES = (SCHEME, AZURE_SCHEME)

ENV_VAR = "KUBECTL_DR_REPO"
# RFC 3986's scheme, then a colon. A relative path whose first component has a colon ("a:b") looks the
# same: it is refused too, and "./a:b" says it is a path.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
KNOWN_HINT = ("A repository is a directory (a path; write ./NAME for a relative one whose name has a colon) "
              "or s3://BUCKET/PREFIX or azure://CONTAINER/PREFIX.")


def check_scheme(value: str, origin: str) -> None:
    """Refuse ``value`` (from ``origin``: --repo, KUBECTL_DR_REPO, …) if it names a scheme we do not know."""
    if value.startswith(REMOTE_SCHEMES):
        return
    match = _URL_SCHEME.match(value)
    if match and match.group(0) == "restic:" and not origin.startswith("--"):
        raise UsageError(f"{origin} names a restic repository ({value}): a restic repository is given with --repo",
                         hint=f"Pass --repo {value} to a command that takes restic repositories. " + KNOWN_HINT)
    if match and match.group(0) == "restic:":
        raise UsageError(f"{origin} {value} is a restic repository, which this command does not read or write",
                         hint="restic repositories take volume backups (pvc backup, restore), etcd snapshots (etcd "
                              "snapshot, restore; etcd snapshots list, pull) and control-plane files; `backups list, "
                              "verify, prune, ls, cat` read them. " + KNOWN_HINT)
    if match:
        raise UsageError(f"unknown repository scheme {match.group(0)!r} in {origin} {value}: the repositories "
                         "kubectl-dr knows are a directory, s3:// and azure://", hint=KNOWN_HINT)


def default_repo_path(env: Mapping[str, str]) -> Path:
    # XDG base directory spec: an unset, empty or relative XDG_DATA_HOME is ignored.
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        home = env.get("HOME") or str(Path.home())
        base = Path(home) / ".local" / "share"
    return base / "kubectl-dr" / "backups"


def resolve_repo_ref(cli_value: str | None, env: Mapping[str, str], configured: str | None = None, *,
                     option: str = "--repo") -> str:
    """The repository as given (an s3:// or azure:// URL) or as an absolute path; ``env`` is injected for tests.
    ``option`` names where ``cli_value`` came from (--repo, --to, --copy-to) in the error for a bad one."""
    origins = (option, ENV_VAR, "the config file's repository:")
    for value, origin in zip((cli_value, env.get(ENV_VAR), configured), origins, strict=True):
        if value:
            check_scheme(value, origin)
            if value.startswith(REMOTE_SCHEMES):
                return value
            return str(Path(value).expanduser().absolute())
    return str(default_repo_path(env))


def resolve_repo_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """The repository directory (local repositories only: an s3:// or azure:// value is refused)."""
    ref = resolve_repo_ref(cli_value, env)
    if ref.startswith(REMOTE_SCHEMES):
        raise ValueError(f"{ref} is not a local directory")
    return Path(ref)


def is_s3(ref: str) -> bool:
    return ref.startswith(SCHEME)


def is_azure(ref: str) -> bool:
    return ref.startswith(AZURE_SCHEME)
