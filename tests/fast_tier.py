"""The fast tier (tests/unit) runs first; when one of its tests failed, the run stops where it ends (minutes
sooner than the loopback tiers would take to finish).

Run in one process, that is after the last fast test. Under pytest-xdist the fast tests are spread over the
workers, and no worker alone knows the tier's outcome: the controller, which receives every report (also a
crashed worker's), writes each fast test's outcome to a file in the run's temp dir, and a worker about to
start its first loopback test waits until that file holds every fast test of the run, then stops (without
running it) if one failed. It also stops waiting when the run is stopping: its own session's stop flag, or
the controller's (`-x`/`--maxfail` reached on any worker), which the controller writes to the same file:
a worker whose fast tests all passed must not wait out WAIT_SECONDS for outcomes other workers, already
stopped, will never send.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ordering import FAST, TIERS, tier

FAILED, PASSED, STOP = "F", "P", "S"
# Longer than any tier of fast tests takes on the CI machine; past it a worker goes on (a slow run, not a hang).
WAIT_SECONDS = 1200.0


class FastTier:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.failed: set[str] = set()  # the fast tests that failed in any phase, of this process's reports
        self.waited = False
        self.failures = 0  # the controller: failed reports of any test, counted as xdist counts for --maxfail

    @property
    def worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def controller(self) -> bool:
        return self.config.pluginmanager.has_plugin("dsession")

    def outcomes(self) -> Path:
        """The run's file of fast outcomes: in the controller's temp dir, the parent of every worker's."""
        if self.worker:
            return Path(str(self.config.option.basetemp)).parent / "fast-tier-outcomes"
        return self.config._tmp_path_factory.getbasetemp() / "fast-tier-outcomes"  # type: ignore[attr-defined]

    def message(self, failed: int) -> str:
        return f"{failed} test(s) of the fast tier (tests/unit) failed: the loopback tiers did not run"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.controller and report.failed:
            self._count_failure()
        # By path: the report xdist makes for a test whose worker crashed carries no keywords.
        parts = report.nodeid.split("/")
        if self.worker or len(parts) < 3 or parts[0] != "tests" or TIERS.get(parts[1]) != FAST:
            return
        if report.failed:
            self.failed.add(report.nodeid)
        if self.controller and report.when in ("teardown", "???"):  # "???": the crashed test's only report
            with open(self.outcomes(), "a") as out:  # one short line per write: appends do not interleave
                out.write(f"{FAILED if report.nodeid in self.failed else PASSED} {report.nodeid}\n")

    def _count_failure(self) -> None:
        """The controller stops the run after --maxfail failures (xdist's own rule); tell the waiting workers."""
        self.failures += 1
        maxfail = int(self.config.getoption("maxfail") or 0)
        if maxfail and self.failures == maxfail:
            with open(self.outcomes(), "a") as out:
                out.write(f"{STOP} stopping after {self.failures} failure(s)\n")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        """In one process: after the last fast test, stop if one failed."""
        yield
        if (not self.worker and self.failed and tier(item) == FAST
                and (nextitem is None or tier(nextitem) != FAST)):
            item.session.shouldfail = self.message(len(self.failed))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """xdist ends a run a worker stopped, or one that reached --maxfail, as interrupted (2); a failed
        fast tier, or a run stopped by -x, is a failed run (1), as in one process."""
        maxfail = int(self.config.getoption("maxfail") or 0)
        stopped = self.failed or (maxfail and self.failures >= maxfail)  # -x: a failed run, as in one process
        if self.controller and stopped and session.exitstatus == pytest.ExitCode.INTERRUPTED:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Under xdist: before this worker's first test of another tier (before its fixtures start a cluster),
        the whole fast tier's outcome; that test is reported skipped with the reason, and the run stops."""
        if not self.worker or self.waited or tier(item) == FAST:
            return
        self.waited = True
        expected = sum(1 for i in item.session.items if tier(i) == FAST)
        if not expected:
            return
        path, deadline = self.outcomes(), time.monotonic() + WAIT_SECONDS
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = path.read_text().splitlines() if path.exists() else []
            stop = next((line[2:] for line in lines if line.startswith(STOP)), None)
            stop = stop or item.session.shouldstop or item.session.shouldfail
            if stop:
                item.session.shouldstop = f"the run is stopping ({stop}): the loopback tiers did not run"
                pytest.skip(str(item.session.shouldstop))
            if sum(1 for line in lines if not line.startswith(STOP)) >= expected:
                break
            time.sleep(0.2)
        failed = sum(1 for line in lines if line.startswith(FAILED))
        if failed:
            item.session.shouldfail = self.message(failed)
            pytest.skip(self.message(failed))
