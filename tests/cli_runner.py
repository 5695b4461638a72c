"""Run `kubectl dr`: in this interpreter by default, as the installed executables where a real process matters."""

from __future__ import annotations

import contextlib
import io
import locale
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    import click

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


Result = subprocess.CompletedProcess[str]


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
    subprocess: bool = False,
    tree: click.Command | None = None,
) -> Result:
    """The suite's one way to run `kubectl dr ARGS`: against `cluster`'s kubeconfig, with `repo` as
    KUBECTL_DR_REPO and `--context CONTEXT` when given, in `env` (else clean_env()) plus `extra_env`, with
    `input` as stdin (else an empty stdin, as in cron or CI) in `cwd`.

    In this interpreter by default: the executable's own entry point (`kubectl_dr.cli.main.run`) with this
    environment, stdin, stdout and stderr (none of them a terminal) and working directory for the call, so
    a usage error, a dry run or an output format costs milliseconds instead of an interpreter's start.
    The result has the subprocess's shape (stdout and stderr apart, decoded as `text=True` decodes them).

    `subprocess=True` runs the installed executable, as a user does, for what only a real process shows:
    signals and Ctrl-C, terminals, the exit code of the executable, the kubectl plugin protocol and
    completion, a `timeout`, and runs that start pods, whose cleanup must not depend on the test process.

    `tree` (in this interpreter only) runs that command tree instead of the one the executable builds."""
    full = dict(env) if env is not None else clean_env()
    if cluster is not None:
        full["KUBECONFIG"] = str(cluster.kubeconfig)
    if repo is not None:
        full["KUBECTL_DR_REPO"] = str(repo)
    full.update(extra_env or {})
    argv = ["--context", context, *args] if context else list(args)
    if subprocess:
        if tree is not None:
            raise ValueError("a command tree can only be given to a run in this interpreter")
        return run([executable(), *argv], env=full, input=input, timeout=timeout, cwd=cwd)
    return _in_process(argv, full, input, cwd, tree)


def _in_process(argv: list[str], env: dict[str, str], input: bytes | None, cwd: str | Path | None,
                tree: click.Command | None = None) -> Result:
    from kubectl_dr.cli.main import run as main_run
    from kubectl_dr.kube import trace

    # Byte streams under text ones, like a process's: `backups cat` writes to sys.stdout.buffer.
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    stdin = io.TextIOWrapper(io.BytesIO(input or b""), encoding="utf-8")
    command = [executable(), *argv]
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    os.environ.clear()
    os.environ.update(env)
    sys.argv = command  # `schedule print` writes the path of the executable it runs as into the entries
    try:
        if cwd is not None:
            os.chdir(cwd)
        with _streams(stdin, stdout, stderr):
            try:
                code = main_run(argv, tree)
            except SystemExit as exc:  # what a process would end with, should anything call sys.exit
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        stdout.flush()
        stderr.flush()
    finally:
        trace.configure(0, None)  # `-v N` is kept in the module for the life of the process, as a process would
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return _as_text_run(command, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _streams(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> Iterator[None]:
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def _as_text_run(args: list[str], code: int, out: bytes, err: bytes) -> Result:
    """Bytes as `subprocess.run(text=True)` returns them: the locale's encoding, universal newlines."""
    def text(raw: bytes) -> str:
        return io.TextIOWrapper(io.BytesIO(raw), encoding=locale.getpreferredencoding(False)).read()

    return subprocess.CompletedProcess(args, code, text(out), text(err))


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
