"""Where the backup repository lives: --repo, then KUBECTL_DR_REPO, then the config file, then the XDG
data directory. A value starting with s3:// names an S3 repository; anything else a local directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kubectl_dr.repo.s3client import SCHEME

ENV_VAR = "KUBECTL_DR_REPO"


def default_repo_path(env: Mapping[str, str]) -> Path:
    # XDG base directory spec: an unset, empty or relative XDG_DATA_HOME is ignored.
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        home = env.get("HOME") or str(Path.home())
        base = Path(home) / ".local" / "share"
    return base / "kubectl-dr" / "backups"


def resolve_repo_ref(cli_value: str | None, env: Mapping[str, str], configured: str | None = None) -> str:
    """The repository as given (an s3:// URL) or as an absolute path; ``env`` is injected for tests."""
    for value in (cli_value, env.get(ENV_VAR), configured):
        if value:
            if value.startswith(SCHEME):
                return value
            return str(Path(value).expanduser().absolute())
    return str(default_repo_path(env))


def resolve_repo_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """The repository directory (local repositories only: an s3:// value is refused)."""
    ref = resolve_repo_ref(cli_value, env)
    if ref.startswith(SCHEME):
        raise ValueError(f"{ref} is not a local directory")
    return Path(ref)


def is_s3(ref: str) -> bool:
    return ref.startswith(SCHEME)
