"""A test server run as its own process group (SeaweedFS, Azurite): waiting until it answers, stopping it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_answering(name: str, endpoint: str, probe: Callable[[], object], proc: subprocess.Popen[bytes] | None,
                   log: Path | None, timeout: float) -> None:
    """Return once `probe()` succeeds; raise with the server's log if it exits, or once `timeout` passed."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{text}")
        try:
            probe()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"{name} did not answer on {endpoint} within {timeout}s: {last}")


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace` seconds (its data is thrown away)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
