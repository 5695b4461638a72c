"""Transfer progress on stderr: a rich bar (bytes, speed, ETA) on a terminal, plain lines elsewhere.

Without a terminal (CI logs, cron mail, `kubectl dr … 2>log`) a line comes every
KUBECTL_DR_PROGRESS_SECONDS (default 10) from a timer of its own, so a transfer that stalls still says so
(its rate falls) instead of going quiet. restic prints nothing there unless RESTIC_PROGRESS_FPS is set;
a recovery that runs for an hour in a pipeline must show it is alive, hence a default: 10 s, as rustic's
log interval, keeps a log readable. Sizes and rates come from kubectl_dr.units in both renderers.
`advance` is called from the exec reader thread; both renderers are safe for that.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from kubectl_dr import units
from kubectl_dr.ui.terminals import is_terminal

INTERVAL_VARIABLE = "KUBECTL_DR_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0
_OLD_VARIABLE = "KUBECTL_DR_PROGRESS_INTERVAL"  # its earlier name, still read so that setups keep working
_MIN_TICK = 0.05  # the timer's shortest wait: an interval of 0 means "as often as bytes arrive", not a busy loop


def interval_from_environment() -> float:
    """Seconds between plain progress lines, from the environment (a bad value falls back to the default)."""
    text = os.environ.get(INTERVAL_VARIABLE) or os.environ.get(_OLD_VARIABLE)
    try:
        value = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


class Transfer:
    """`with Transfer("backup shop/data", total) as t: t.advance(n)`; total may be an estimate or None."""

    def __init__(self, description: str, total: int | None, *, stream: TextIO | None = None,
                 interval: float | None = None, bar: bool | None = None) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        # The console says whether stderr is a terminal (read once per command); standalone, ask the stream.
        self.bar = is_terminal(self.stream) if bar is None else bar
        self.interval = interval if interval is not None else interval_from_environment()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_line = self._start
        self._rich: Any = None
        self._task: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self._start, 1e-9)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    def __enter__(self) -> Transfer:
        self._start = self._last_line = time.monotonic()
        if self.bar:
            self._rich = _rich_progress(self.stream)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
        else:
            # Lines come from a timer, not only from advance(): pods starting, a stalled stream or a slow
            # listing send no bytes, and silence then reads as a hang.
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size
            if self._rich is not None:
                self._rich.update(self._task, completed=self.done)
                return
            self._line_if_due()

    def _tick(self) -> None:
        while not self._stop.wait(max(self.interval, _MIN_TICK)):
            with self._lock:
                self._line_if_due()

    def _line_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._line()

    def _line(self, final: bool = False) -> None:
        text = f"{self.description}: {units.size(self.done)}"
        if self.total and not final:
            share = min(self.done / self.total, 1.0)
            text += f" of ~{units.size(self.total)} ({share:.0%}), {units.rate(self.rate)}"
            if self.rate > 0:  # no bytes yet: no honest ETA
                text += f", ETA {units.duration(max(self.total - self.done, 0) / self.rate)}"
        else:
            text += f" in {units.duration(self.elapsed)}, {units.rate(self.rate)}"
            if final:
                text += " (done)"
        print(text, file=self.stream, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._rich is not None:
            if exc_type is None and self.total is not None:
                self._rich.update(self._task, total=self.done, completed=self.done)
            self._rich.stop()
        elif exc_type is None:
            with self._lock:
                self._line(final=True)


def _rich_progress(stream: TextIO) -> Any:
    """The terminal bar, its numbers in kubectl_dr.units (rich's own speed column counts in MB/s)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
    from rich.text import Text

    class Sizes(ProgressColumn):
        def render(self, task: Task) -> Text:
            total = f" / {units.size(task.total)}" if task.total is not None else ""
            return Text(f"{units.size(task.completed)}{total}", style="progress.download")

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            if task.finished and task.finished_time:  # the whole transfer's rate, as the plain lines end
                speed = task.completed / task.finished_time
            return Text("?" if speed is None else units.rate(speed), style="progress.data.speed")

    class Remaining(ProgressColumn):
        max_refresh = 0.5  # an ETA that changes every frame cannot be read

        def render(self, task: Task) -> Text:
            if task.finished:
                return Text(f"in {units.duration(task.finished_time or task.elapsed or 0)}",
                            style="progress.elapsed")
            left = task.time_remaining
            return Text("ETA ?" if left is None else f"ETA {units.duration(left)}", style="progress.remaining")

    return Progress(TextColumn("{task.description}"), BarColumn(), Sizes(), Rate(), Remaining(),
                    console=Console(file=stream), transient=False)
