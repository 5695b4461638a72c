"""Shared pytest setup: the loopback cluster fixtures, and `--kubeconfig` for opt-in real-cluster tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.fixture import cluster, cluster_factory  # noqa: F401  (fixtures, used by name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kubeconfig", action="store", default=None, metavar="PATH",
                     help="kubeconfig of a real cluster: runs the tests marked real_cluster against it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--kubeconfig"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: pass --kubeconfig PATH to run it")
    for item in items:
        if "real_cluster" in item.keywords:
            item.add_marker(skip)


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
