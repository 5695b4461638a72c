"""kubectl-dr run as an install runs it: from compiled bytecode.

pip compiles a wheel's modules when it installs them. An editable checkout under
PYTHONDONTWRITEBYTECODE (as the development machines set it) compiles every kubectl_dr module a run
imports, on every run: ~0.6 CPU-s for a `pvc backup`, counted against kubectl-dr's CPU per GiB and in
the fixed seconds of an `etcd snapshot`. The benchmarks compile once into a cache of their own instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubectl_dr


def as_installed(env: dict[str, str], work: Path) -> dict[str, str]:
    """`env` with bytecode written and read under `work`, the package compiled there already."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    package = Path(kubectl_dr.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env={**os.environ, **env},
                   check=True, stdout=subprocess.DEVNULL)
    return env
