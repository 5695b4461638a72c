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
    full_env = {**os.environ, "RESTIC_PASSWORD": password, "RESTIC_CACHE_DIR": str(Path(str(repo)).parent / ".cache"),
                **(env or {})}
    full_env.pop("RESTIC_REPOSITORY", None)
    proc = subprocess.run([restic_binary(), "-r", str(repo), "--no-lock" if "--no-lock" in args else "-q", *[
        a for a in args if a != "--no-lock"]], capture_output=True, text=True, env=full_env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def restic_json(repo: str | Path, *args: str) -> Any:
    return json.loads(restic(repo, "--json", *args).stdout)
