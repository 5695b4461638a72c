"""The suite's own order (tests/ordering.py): tiers come from directories only, and modules of one cluster
shape run next to each other, read from their real `cluster_factory(...)` calls."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.ordering import TIERS, WILDCARD, matches, module_groups, module_shapes, order_modules, shape

TESTS = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_sets_its_tier_marker_by_hand() -> None:
    by_hand = re.compile(r"pytest\.mark\.(" + "|".join(set(TIERS.values())) + r")\b")
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if by_hand.search(p.read_text())]
    assert offenders == []


def test_every_test_directory_has_a_tier() -> None:
    directories = {p.parent.name for p in TESTS.rglob("test_*.py") if p.parent != TESTS}
    assert directories <= set(TIERS), directories - set(TIERS)


def test_shapes_are_read_with_the_factorys_defaults_and_the_modules_constants(tmp_path: Path) -> None:
    module = load(tmp_path, "shapes_a", (
        "OWN = ('v5',)\n"
        "def a(cluster_factory, request):\n"
        "    cluster_factory(control_planes=1, exec_protocols=OWN)\n"
        "    cluster_factory(control_planes=3, workers=1, etcd_version=str(request.param))\n"))
    shapes = module_shapes(module)
    own = shape({"control_planes": 1, "exec_protocols": ["v5"]})
    assert own in shapes
    assert dict(own)["workers"] == "1" and dict(own)["etcd_version"] == "'3.5'"
    any_version = next(s for s in shapes if s != own)
    assert dict(any_version)["etcd_version"] == WILDCARD
    assert matches(any_version, shape({"control_planes": 3, "etcd_version": "3.4"}))
    assert not matches(any_version, shape({"control_planes": 3, "private": "mine"}))
    # The pool's own keys are the same shapes: an images dict and an empty one are told apart.
    assert shape({"images": {}}) == shape({}) != shape({"images": {"a": "busybox"}})


def test_modules_of_one_shape_run_together_after_those_without_a_pool_cluster(tmp_path: Path) -> None:
    three = "def f(cluster_factory):\n    cluster_factory(control_planes=3)\n"
    one = "def f(cluster_factory):\n    cluster_factory(control_planes=1)\n"
    a = load(tmp_path, "order_a", three)
    b = load(tmp_path, "order_b", one)
    c = load(tmp_path, "order_c", "def f(cluster):\n    pass\n")
    d = load(tmp_path, "order_d", three)
    assert order_modules([a, b, c, d]) == [c, a, d, b]


def test_modules_sharing_a_pool_shape_share_one_xdist_group(tmp_path: Path) -> None:
    three = "def f(cluster_factory):\n    cluster_factory(control_planes=3)\n"
    a = load(tmp_path, "group_a", three)
    b = load(tmp_path, "group_b", "def f(cluster_factory):\n    cluster_factory(control_planes=1)\n")
    c = load(tmp_path, "group_c", "def f(cluster):\n    pass\n")
    d = load(tmp_path, "group_d", "def f(cluster_factory, request):\n    cluster_factory(etcd_version=request.param)\n")
    e = load(tmp_path, "group_e", "def f(cluster_factory):\n    cluster_factory(control_planes=3, private='own')\n")
    groups = module_groups([a, b, c, d, e])
    assert groups[a] == groups[d] == "pool:group_a"  # d's wildcard version may be a's cluster
    assert groups[b] == "pool:group_b" and groups[e] == "pool:group_e"
    assert groups[c] == "group_c"  # the session cluster: every worker has its own


FAST_FAILS = "def test_fast():\n    assert {ok}\n"
LOOPBACK_RUNS = ("from pathlib import Path\n\ndef test_loopback():\n    Path({marker!r}).write_text('ran')\n")
CONFTEST = (
    "import sys\n"
    "sys.path.insert(0, {repo!r})\n"
    "from tests.fast_tier import FastTier\n"
    "from tests.ordering import reorder\n\n"
    "def pytest_configure(config):\n"
    "    config.pluginmanager.register(FastTier(config), 'fast-tier')\n\n"
    "def pytest_collection_modifyitems(config, items):\n"
    "    reorder(items, distributed=hasattr(config, 'workerinput'))\n")


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("fast_ok", [True, False])
def test_a_failing_fast_test_stops_the_run_before_the_loopback_tiers(tmp_path: Path, workers: str,
                                                                       fast_ok: bool) -> None:
    """In one process and under xdist workers (each of which sees only part of the fast tier)."""
    project = tmp_path / "project"
    (project / "tests" / "unit").mkdir(parents=True)
    (project / "tests" / "e2e").mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "conftest.py").write_text(CONFTEST.format(repo=str(TESTS.parent)))
    for i in range(4):
        (project / "tests" / "unit" / f"test_fast_{i}.py").write_text(FAST_FAILS.format(ok=fast_ok or i != 2))
    marker = tmp_path / "loopback-ran"
    (project / "tests" / "e2e" / "test_loop.py").write_text(LOOPBACK_RUNS.format(marker=str(marker)))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", workers,
                             "--dist", "loadgroup", "--no-loadscope-reorder", "-q", "tests"],
                            cwd=project, capture_output=True, text=True, timeout=120)
    if fast_ok:
        assert result.returncode == 0, result.stdout + result.stderr
        assert marker.exists()
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 test(s) of the fast tier (tests/unit) failed: the loopback tiers did not run" in result.stdout
        assert not marker.exists()
