"""The real `restic` CLI, run against a repository with a password: the oracle of the format tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery staple"


def restic_binary() -> str:
    found = shutil.which("restic")
    if not found:
        raise AssertionError("the restic CLI is not installed (.ci/run installs restic from Debian 13)")
    return found


def restic(repo: str | Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
           password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    # restic's cache beside a local repository; none for a remote one (its string is no path to put it by).
    cache = {"RESTIC_CACHE_DIR": str(Path(str(repo)).parent / ".cache")} if Path(str(repo)).is_absolute() else {}
    full_env = {**os.environ, "RESTIC_PASSWORD": password, **cache, **(env or {})}
    extra = [] if cache else ["--no-cache"]
    full_env.pop("RESTIC_REPOSITORY", None)
    proc = subprocess.run([restic_binary(), "-r", str(repo), "-q", *extra, *args], capture_output=True, text=True,
                          env=full_env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def restic_json(repo: str | Path, *args: str) -> Any:
    return json.loads(restic(repo, "--json", *args).stdout)
