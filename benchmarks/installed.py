"""kubectl-dr run as an install runs it: from compiled bytecode.

pip compiles a wheel's modules when it installs them. An editable checkout under
PYTHONDONTWRITEBYTECODE (as the development machines set it) compiles every kubectl_dr module a run
imports, on every run: ~0.6 CPU-s for a `pvc backup`, counted against kubectl-dr's CPU per GiB and in
the fixed seconds of an `etcd snapshot`. The benchmarks compile the package once, beside its sources
as pip would. Not PYTHONPYCACHEPREFIX: it moves every module's cache, so the first measured run would
compile the standard library and the Kubernetes client instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubectl_dr


def as_installed(env: dict[str, str]) -> dict[str, str]:
    """`env` without PYTHONDONTWRITEBYTECODE, the package compiled already."""
    env = {k: v for k, v in env.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    package = Path(kubectl_dr.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env
