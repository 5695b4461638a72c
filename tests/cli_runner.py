"""Run the installed `kubectl-dr` executables as a user would: as subprocesses, never in-process."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")


def executable(name: str = "kubectl-dr") -> str:
    """The console script installed with the package (next to this interpreter first, then PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run `pip install -e .[test]` first")
    return found


def kubectl(version: str = "1.33") -> str:
    path = KUBECTL_DIR / f"kubectl.{version}"
    if not path.exists():
        raise RuntimeError(f"real kubectl {version} not found at {path}")
    return str(path)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment without the developer's kubeconfig, with the plugin's directory first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBECTL_DR", "KUBERNETES_"))}
    env["PATH"] = f"{Path(executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("_", None)
    if extra:
        env.update(extra)
    return env


def run(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 120,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with no terminal: stdin is `input`, or empty (as in cron or CI)."""
    return subprocess.run(
        args,
        env=dict(env) if env is not None else clean_env(),
        input=input.decode() if input is not None else None,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


class HasKubeconfig(Protocol):
    @property
    def kubeconfig(self) -> Path: ...


def dr(
    *args: str,
    cluster: HasKubeconfig | None = None,
    repo: str | Path | None = None,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 300,
    cwd: str | Path | None = None,
    in_process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The suite's one way to run `kubectl dr ARGS`: against `cluster`'s kubeconfig, with `repo` as
    KUBECTL_DR_REPO and `--context CONTEXT` when given, in `env` (else clean_env()) plus `extra_env`.

    A subprocess, as a user runs it; `in_process` runs the same entry point (`kubectl_dr.cli.main.run`) in
    this interpreter instead, for what ends before any I/O (usage errors, dry runs, output formats), where
    the interpreter's start is most of the time. Signals, terminals, exit codes of the executable and the
    plugin protocol stay subprocesses."""
    full = dict(env) if env is not None else clean_env()
    if cluster is not None:
        full["KUBECONFIG"] = str(cluster.kubeconfig)
    if repo is not None:
        full["KUBECTL_DR_REPO"] = str(repo)
    full.update(extra_env or {})
    flags = ["--context", context] if context else []
    if in_process:
        assert input is None and cwd is None, "in_process runs take no stdin and no working directory"
        return _in_process([*flags, *args], full)
    return run([executable(), *flags, *args], env=full, input=input, timeout=timeout, cwd=cwd)


def _in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from kubectl_dr.cli.main import run as main_run

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main_run(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["kubectl-dr", *args], code, out.getvalue(), err.getvalue())


def run_until(args: list[str], env: dict[str, str], line: str, sig: signal.Signals) -> tuple[int, str]:
    """Run `kubectl dr ARGS` and send `sig` as soon as it prints `line` on stderr; its exit code and stderr.

    The interruption tests cut a command at a step it names aloud, so the cut lands where the step is."""
    proc = subprocess.Popen([executable(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    try:
        for text in proc.stderr:
            seen.append(text)
            if line in text:
                proc.send_signal(sig)
                break
        seen.append(proc.stderr.read())
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = "".join(seen)
    assert any(line in s for s in seen[:-1]), f"never said {line!r}:\n{said}"
    return proc.returncode, said
