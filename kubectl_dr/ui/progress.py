"""Transfer progress on stderr: a rich bar (bytes, speed, ETA) on a terminal, plain lines elsewhere.

Plain lines come every few seconds (KUBECTL_DR_PROGRESS_INTERVAL, default 5) so that CI logs and
`kubectl dr … 2>log` show the transfer is alive without a line per megabyte. `advance` is called from
the exec reader thread; both renderers are safe for that.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from kubectl_dr import units


class Transfer:
    """`with Transfer("backup shop/data", total) as t: t.advance(n)`; total may be an estimate or None."""

    def __init__(self, description: str, total: int | None, *, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.interval = interval if interval is not None else float(os.environ.get("KUBECTL_DR_PROGRESS_INTERVAL", 5))
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_line = self._start
        self._rich: Any = None
        self._task: Any = None

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self._start, 1e-9)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    def __enter__(self) -> Transfer:
        self._start = self._last_line = time.monotonic()
        if self.stream.isatty():
            self._rich = _rich_progress(self.stream)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size
            if self._rich is not None:
                self._rich.update(self._task, completed=self.done)
                return
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._line()

    def _line(self, final: bool = False) -> None:
        text = f"{self.description}: {units.size(self.done)}"
        if self.total and not final:
            share = min(self.done / self.total, 1.0)
            left = (self.total - self.done) / self.rate if self.rate > 0 and self.total > self.done else 0.0
            text += (f" of ~{units.size(self.total)} ({share:.0%}), {units.rate(self.rate)}, "
                     f"ETA {units.duration(left)}")
        else:
            text += f" in {units.duration(self.elapsed)}, {units.rate(self.rate)}"
            if final:
                text += " (done)"
        print(text, file=self.stream, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            if exc_type is None and self.total is not None:
                self._rich.update(self._task, total=self.done, completed=self.done)
            self._rich.stop()
        elif exc_type is None:
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
            return Text("?" if speed is None else units.rate(speed), style="progress.data.speed")

    class Remaining(ProgressColumn):
        max_refresh = 0.5  # an ETA that changes every frame cannot be read

        def render(self, task: Task) -> Text:
            left = task.time_remaining
            return Text("ETA ?" if left is None else f"ETA {units.duration(left)}", style="progress.remaining")

    return Progress(TextColumn("{task.description}"), BarColumn(), Sizes(), Rate(), Remaining(),
                    console=Console(file=stream), transient=False)
