"""Shared pytest setup: tiers and order (tests/ordering.py), the loopback cluster fixtures, and `--kubeconfig`
for opt-in real-cluster tests."""

from __future__ import annotations

import compileall
import os
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
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
)
from tests.fast_tier import FastTier
from tests.ordering import ModuleScheduling, reorder
from tests.s3server import S3Server, serve

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Bytecode for the package and the suite before any test starts a process. Every `dr()` is a new
    kubectl-dr interpreter and every loopback cluster a new server: where writing bytecode is off
    (PYTHONDONTWRITEBYTECODE, a read-only checkout) each one compiled every module it imports again, about
    0.3 s of CPU per start, thousands of starts per run. An installed package has its bytecode too (pip
    compiles it), so this is also what a user runs. Python still checks each file's time and size against
    its bytecode, so an edited module is compiled afresh."""
    if not hasattr(session.config, "workerinput"):  # once per run: the controller's (or the only) process
        for package in ("kubectl_dr", "tests"):
            compileall.compile_dir(ROOT / package, quiet=1, workers=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kubeconfig", action="store", default=None, metavar="PATH",
                     help="kubeconfig of a real cluster: runs the tests marked real_cluster against it")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FastTier(config), "fast-tier")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers reorder() sets
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reorder(items, distributed=hasattr(config, "workerinput"))
    if config.getoption("--kubeconfig"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: pass --kubeconfig PATH to run it")
    for item in items:
        if "real_cluster" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> ModuleScheduling | None:
    """Under xdist (pyproject's addopts say `--dist loadscope`): whole modules to each worker, in the
    collection's order (tests/ordering.py). `load` and `loadgroup` get the same: either would split a
    module over workers (loadgroup's marks are lost on pytest 9.2), and a test may build on the one before it."""
    whole_modules = config.getoption("dist") in ("load", "loadscope", "loadgroup")
    return ModuleScheduling(config, log) if whole_modules else None


@pytest.fixture(scope="session", autouse=True)
def _own_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default repository ($XDG_DATA_HOME/kubectl-dr/backups), config file and schedule state of every
    kubectl-dr a test runs are this process's own: neither the developer's nor another xdist worker's. So
    is the cache of the tools the tests run (restic keeps its cache under $XDG_CACHE_HOME when no
    RESTIC_CACHE_DIR is given, as for a rest: URL). A test that sets one of these variables itself still does."""
    base = tmp_path_factory.mktemp("xdg")
    names = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")
    before = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(base / name.lower())
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
