"""The undo stack runs on success, on errors and on real SIGINT/SIGTERM, and reports what failed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubectl_dr import cleanup


def test_steps_unwind_newest_first_and_failures_are_reported() -> None:
    order: list[str] = []
    reported: list[cleanup.UndoFailure] = []

    def boom() -> None:
        raise RuntimeError("api server gone")

    with pytest.raises(ValueError), cleanup.scope(lambda _m: None, reported.extend) as stack:
        stack.push("delete pod a", lambda: order.append("a"))
        stack.push("scale up db", boom, fallback_hint="run `kubectl dr scale restore -n shop`")
        stack.push("delete pod b", lambda: order.append("b"))
        raise ValueError("command failed")
    assert order == ["b", "a"]
    assert [f.step.description for f in reported] == ["scale up db"]
    assert reported[0].step.fallback_hint == "run `kubectl dr scale restore -n shop`"


def test_discarded_steps_do_not_run() -> None:
    ran: list[str] = []
    with cleanup.scope(lambda _m: None, lambda _f: None) as stack:
        step = stack.push("delete pod", lambda: ran.append("x"))
        stack.discard(step)
    assert ran == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_unwinds_and_a_second_signal_does_not_stop_the_cleanup(tmp_path: Path, sig: signal.Signals) -> None:
    _interrupt_twice(tmp_path, sig, early=False)


def test_a_second_signal_does_not_tear_an_early_unwind(tmp_path: Path) -> None:
    """An interrupted parallel backup unwinds at once, inside the command (before its scope's own cleanup):
    a second Ctrl-C arriving then must not drop the step being undone (a workload left at 0)."""
    _interrupt_twice(tmp_path, signal.SIGINT, early=True)


def _interrupt_twice(tmp_path: Path, sig: signal.Signals, *, early: bool) -> None:
    marker = tmp_path / "undone"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import sys, time, pathlib
        from kubectl_dr import cleanup
        from kubectl_dr.errors import Interrupted

        def slow_undo():
            pathlib.Path({str(ready)!r}).write_text("cleaning")
            time.sleep(1.0)  # the test sends a second signal now
            pathlib.Path({str(marker)!r}).write_text("done")

        def say(m):
            print(m, file=sys.stderr, flush=True)

        try:
            with cleanup.scope(say, lambda f: None) as stack:
                stack.push("restore replicas", slow_undo)
                pathlib.Path({str(ready)!r}).write_text("running")
                try:
                    time.sleep(30)
                except Interrupted:
                    if {early!r}:
                        stack.unwind(say)
                    raise
        except Interrupted as exc:
            print(exc.render(), file=sys.stderr)
            sys.exit(exc.exit_code)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (ready.exists() and ready.read_text() == "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    while ready.read_text() != "cleaning":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert marker.read_text() == "done"
    assert "cleaning up: restore replicas" in err
    assert "finishing the cleanup first" in err
    assert f"error: interrupted by {sig.name}" in err
