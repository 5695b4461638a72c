"""Where the backup repository lives: --repo, then KUBECTL_DR_REPO, then the XDG data directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "KUBECTL_DR_REPO"


def resolve_repo_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """The repository directory; ``env`` is passed in (not read from os.environ) so tests can inject it."""
    if cli_value:
        return Path(cli_value).expanduser().absolute()
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser().absolute()
    # XDG base directory spec: an unset, empty or relative XDG_DATA_HOME is ignored.
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        home = env.get("HOME") or str(Path.home())
        base = Path(home) / ".local" / "share"
    return base / "kubectl-dr" / "backups"
