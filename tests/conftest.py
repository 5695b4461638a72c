"""Shared pytest setup: tiers and order (tests/ordering.py), the loopback cluster fixtures, and `--kubeconfig`
for opt-in real-cluster tests."""

from __future__ import annotations

import compileall
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import azurite as azurite_server

# Fixtures, used by name, the hook that tells the pool which module asks, and the pool's counts in the summary.
from tests.cluster.fixture import (  # noqa: F401
    cluster,
    cluster_factory,
    pytest_runtest_setup,
    pytest_runtest_teardown,
    pytest_terminal_summary,
)
from tests.ordering import FAST, reorder, tier
from tests.s3server import S3Server, serve

_fast_failures: list[str] = []
ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Bytecode for the package and the suite before any test starts a process. Every `dr()` is a new
    kubectl-dr interpreter and every loopback cluster a new server: where writing bytecode is off
    (PYTHONDONTWRITEBYTECODE, a read-only checkout) each one compiled every module it imports again, about
    0.3 s of CPU per start, thousands of starts per run. An installed package has its bytecode too (pip
    compiles it), so this is also what a user runs. Python still checks each file's time and size against
    its bytecode, so an edited module is compiled afresh."""
    for package in ("kubectl_dr", "tests"):
        compileall.compile_dir(ROOT / package, quiet=1, workers=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kubeconfig", action="store", default=None, metavar="PATH",
                     help="kubeconfig of a real cluster: runs the tests marked real_cluster against it")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers reorder() sets
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reorder(items)
    if config.getoption("--kubeconfig"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: pass --kubeconfig PATH to run it")
    for item in items:
        if "real_cluster" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and FAST in report.keywords:
        _fast_failures.append(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The fast tier runs first; when one of its tests failed, the run stops where it ends (minutes sooner)."""
    yield
    if _fast_failures and tier(item) == FAST and (nextitem is None or tier(nextitem) != FAST):
        item.session.shouldfail = (f"{len(_fast_failures)} test(s) of the fast tier (tests/unit) failed: "
                                   "the loopback tiers did not run")


@pytest.fixture(scope="session")
def real_kubeconfig(pytestconfig: pytest.Config) -> Path:
    """The --kubeconfig given on the command line (tests using it are marked real_cluster)."""
    value = pytestconfig.getoption("--kubeconfig")
    if not value:
        pytest.skip("needs a real cluster: pass --kubeconfig PATH to run it")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise pytest.UsageError(f"--kubeconfig {path}: no such file")
    return path


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS server (master, volume, filer and S3 gateway) for the whole session."""
    yield from serve("seaweedfs", tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 in server mode: a second, independent implementation of the protocol."""
    yield from serve("moto", tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[azurite_server.Azurite]:
    """Azurite (the Azure Storage emulator) serving Blob storage for the whole session."""
    yield from azurite_server.serve(tmp_path_factory.mktemp("azurite"))


@pytest.fixture(params=["seaweedfs", "moto"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    """Each S3 server in turn."""
    return request.getfixturevalue("seaweedfs" if request.param == "seaweedfs" else "moto_s3")  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _put_back_opened_dirs() -> Iterator[None]:
    """The modes a test opened for non-root sandboxes, restored after it (tests.datasets.OPENED)."""
    yield
    from tests.datasets import OPENED

    while OPENED:
        path, mode = OPENED.pop()
        if path.exists():
            path.chmod(mode)
