"""Undo steps that run however a command ends: success, error, Ctrl-C or SIGTERM.

A command registers each thing it creates or changes (a rescue pod, a scaled-down workload) together
with the step that removes or restores it. When the command ends the steps still registered run in
reverse order. Steps that fail are reported with what the user can do instead, never swallowed.

SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped ssh session) are turned into `Interrupted` in
the main thread so the normal unwinding path runs;
while the undo steps run, further signals are only acknowledged: an on-call engineer pressing Ctrl-C
twice must not leave a workload scaled to zero because the second press killed the cleanup.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from kubectl_dr.errors import Interrupted


@dataclass
class UndoStep:
    description: str
    action: Callable[[], None]
    # What to tell the user when the action fails (e.g. "run `kubectl dr scale restore -n shop`").
    fallback_hint: str | None = None
    done: bool = False


@dataclass
class UndoFailure:
    step: UndoStep
    error: BaseException


@dataclass
class Cleanup:
    """A LIFO stack of undo steps for one command run."""

    steps: list[UndoStep] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # How many unwinds are running. A command may unwind early (an interrupted parallel backup removes its
    # rescue pods at once, before its own cleanup): a second Ctrl-C then must not tear a step it has popped.
    unwinding: int = 0

    def push(self, description: str, action: Callable[[], None], *, fallback_hint: str | None = None) -> UndoStep:
        step = UndoStep(description, action, fallback_hint)
        with self._lock:
            self.steps.append(step)
        return step

    def discard(self, step: UndoStep) -> None:
        """Forget a step whose work the command already did itself (e.g. it deleted its pod)."""
        with self._lock:
            step.done = True
            if step in self.steps:
                self.steps.remove(step)

    def run(self, step: UndoStep) -> None:
        """Run one step now (normal path) and forget it; errors propagate to the caller."""
        step.action()
        self.discard(step)

    def unwind(self, log: Callable[[str], None]) -> list[UndoFailure]:
        """Run every pending step, newest first; return the ones that failed."""
        failures: list[UndoFailure] = []
        self.unwinding += 1
        try:
            while True:
                with self._lock:
                    if not self.steps:
                        break
                    step = self.steps.pop()
                if step.done:
                    continue
                log(f"cleaning up: {step.description}")
                try:
                    step.action()
                except BaseException as exc:
                    failures.append(UndoFailure(step, exc))
                step.done = True
        finally:
            self.unwinding -= 1
        return failures


_current: Cleanup | None = None


def current() -> Cleanup:
    """The cleanup stack of the running command (a fresh one outside `scope`, e.g. in library use)."""
    global _current
    if _current is None:
        _current = Cleanup()
    return _current


class _SignalState:
    def __init__(self) -> None:
        self.unwinding = False
        self.received: list[str] = []


@contextmanager
def scope(log: Callable[[str], None], report: Callable[[list[UndoFailure]], None]) -> Iterator[Cleanup]:
    """Install signal handlers, yield the command's cleanup stack, and unwind it however the block ends."""
    global _current
    previous = _current
    stack = Cleanup()
    _current = stack
    state = _SignalState()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        state.received.append(name)
        if state.unwinding or stack.unwinding:
            log(f"received {name} while cleaning up; finishing the cleanup first so nothing is left behind")
            return
        raise Interrupted(name)

    in_main = threading.current_thread() is threading.main_thread()
    old_handlers = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old_handlers[sig] = signal.signal(sig, on_signal)
    try:
        yield stack
    finally:
        state.unwinding = True
        try:
            failures = stack.unwind(log)
        except Interrupted:  # a signal that raced the flag: keep going with what is left
            failures = stack.unwind(log)
        if failures:
            report(failures)
        if in_main:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        _current = previous

