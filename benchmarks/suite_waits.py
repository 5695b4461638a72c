"""Where a test module's wall time goes: a pytest plugin that times every process the tests start and every
`time.sleep` of the test process, and prints the sums at the end of the run (issue 20).

    python -m pytest -n 0 -p benchmarks.suite_waits tests/e2e/test_pvc_consumers.py
    SUITE_WAITS_LOG=waits.log python -m pytest -n 0 -p benchmarks.suite_waits tests/e2e/test_etcd_restore.py -k one

The summary groups processes by program (`kubectl-dr` by its first two arguments), with their count and wall
seconds, then the test process's own sleeps by the line that slept (`tests/polling.py`'s pauses, fixed sleeps).
What is left of a test's wall time is the test process's own work (reading files, writing data sets) and the
gaps between processes. `SUITE_WAITS_LOG` also writes one line per process (start, seconds, exit code, argv)
and per test (start, end), to read a slow test's timeline. Measurement only: the plugin changes no result.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, SupportsIndex, TextIO

_T0 = time.monotonic()
_RUNS: collections.Counter[str] = collections.Counter()
_SECONDS: dict[str, float] = collections.defaultdict(float)
_SLEPT: dict[str, float] = collections.defaultdict(float)
_log: TextIO | None = None


def _write(line: str) -> None:
    if _log is not None:
        _log.write(f"{time.monotonic() - _T0:9.2f} {line}\n")
        _log.flush()


def _program(args: Any) -> str:
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    name = Path(argv[0]).name if argv else "?"
    if name == "kubectl-dr":  # which command: its first two words that are not flags
        words = [a for a in argv[1:] if not a.startswith("-")][:2]
        return " ".join([name, *words])
    return name


_popen_init = subprocess.Popen.__init__
_popen_wait = subprocess.Popen.wait
_sleep = time.sleep


def _init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    self._suite_waits = (time.monotonic(), args)  # type: ignore[attr-defined]
    _popen_init(self, args, *rest, **kwargs)


def _wait(self: subprocess.Popen[Any], timeout: float | None = None) -> int:
    code = _popen_wait(self, timeout)
    started = getattr(self, "_suite_waits", None)
    if started is not None:  # counted once, however often it is waited for
        self._suite_waits = None  # type: ignore[attr-defined]
        seconds = time.monotonic() - started[0]
        program = _program(started[1])
        _RUNS[program] += 1
        _SECONDS[program] += seconds
        argv = " ".join(map(str, started[1])) if isinstance(started[1], (list, tuple)) else str(started[1])
        _write(f"{seconds:7.2f}s rc={code} {argv[:200]}")
    return code


def _timed_sleep(seconds: float | SupportsIndex) -> None:
    frame = sys._getframe(1)
    where = "/".join(frame.f_code.co_filename.rsplit("/", 2)[-2:])
    _SLEPT[f"{where}:{frame.f_lineno} {frame.f_code.co_name}"] += float(seconds)
    _sleep(seconds)


def pytest_configure(config: Any) -> None:
    global _log
    if os.environ.get("SUITE_WAITS_LOG"):
        _log = open(os.environ["SUITE_WAITS_LOG"], "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    subprocess.Popen.__init__ = _init  # type: ignore[method-assign]
    subprocess.Popen.wait = _wait  # type: ignore[method-assign]
    time.sleep = _timed_sleep


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _write(f"==== START {nodeid}")


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _write(f"==== END {nodeid}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write = terminalreporter.write_line
    write(f"suite_waits: {time.monotonic() - _T0:.1f} s in this process")
    for program, seconds in sorted(_SECONDS.items(), key=lambda kv: -kv[1]):
        write(f"  {seconds:8.1f} s  {_RUNS[program]:5d} runs  {program}")
    write("  sleeps of the test process:")
    for where, seconds in sorted(_SLEPT.items(), key=lambda kv: -kv[1])[:10]:
        write(f"  {seconds:8.1f} s  {where}")
