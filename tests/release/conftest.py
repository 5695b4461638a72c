"""The release build starts as soon as the session has collected its tests.

PyInstaller takes more than a minute of one core, while the loopback tests before it mostly wait on pods
and etcd: built side by side with them, the archive is ready by the time its test runs. The test still
checks everything the build produced; only the start moves earlier."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.release.build import ReleaseBuild, pyinstaller_installed

BUILD_TEST = "test_release_archive_installs_with_krew_and_starts_fast"
_early: list[ReleaseBuild] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    # In xdist workers every worker collects every test: one early build (gw0's), not one per worker. If the
    # test then runs on another worker, that one builds when it gets there.
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    if any(item.name == BUILD_TEST for item in session.items) and pyinstaller_installed():
        _early.append(ReleaseBuild.start())


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _early:
        _early.pop().discard()


@pytest.fixture
def release_build() -> Iterator[ReleaseBuild]:
    """The build started at collection, or one started now (a run that collected the test another way)."""
    build = _early.pop() if _early else ReleaseBuild.start()
    try:
        yield build
    finally:
        build.discard()
