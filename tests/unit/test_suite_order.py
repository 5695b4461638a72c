"""The suite's own order (tests/ordering.py): tiers come from directories only, and modules of one cluster
shape run next to each other, read from their real `cluster_factory(...)` calls."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.module_seconds import SECONDS, from_junit
from tests.ordering import (
    TIERS,
    WILDCARD,
    longest_first,
    matches,
    module_families,
    module_shapes,
    order_modules,
    shape,
)

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


def test_modules_sharing_a_pool_shape_are_one_family(tmp_path: Path) -> None:
    three = "def f(cluster_factory):\n    cluster_factory(control_planes=3)\n"
    a = load(tmp_path, "group_a", three)
    b = load(tmp_path, "group_b", "def f(cluster_factory):\n    cluster_factory(control_planes=1)\n")
    c = load(tmp_path, "group_c", "def f(cluster):\n    pass\n")
    d = load(tmp_path, "group_d", "def f(cluster_factory, request):\n    cluster_factory(etcd_version=request.param)\n")
    e = load(tmp_path, "group_e", "def f(cluster_factory):\n    cluster_factory(control_planes=3, private='own')\n")
    families = module_families([a, b, c, d, e])
    assert families[a] == families[d] == "pool:group_a"  # d's wildcard version may be a's cluster
    assert families[b] == "pool:group_b" and families[e] == "pool:group_e"
    assert families[c] == "group_c"  # the session cluster: every worker has its own


def test_workers_get_the_longest_modules_first_and_a_family_together(tmp_path: Path) -> None:
    """Seconds are a second per test for modules tests/module_seconds.py does not list."""
    three = "def f(cluster_factory):\n    cluster_factory(control_planes=3)\n"
    short3 = load(tmp_path, "lpt_short3", three)
    own = load(tmp_path, "lpt_own", "def f(cluster):\n    pass\n")
    long3 = load(tmp_path, "lpt_long3", three)
    one = load(tmp_path, "lpt_one", "def f(cluster_factory):\n    cluster_factory(control_planes=1)\n")
    tests = {short3: 2, own: 30, long3: 40, one: 10}
    # The 3-control-plane family goes first (its longest is the longest), its short module right after.
    assert longest_first([short3, own, long3, one], tests) == [long3, short3, own, one]


# Collects the suite as an xdist worker does (`workerinput` set: reorder(distributed=True)), without
# running it, and prints each test's module in the order the worker sends them.
WORKER_ORDER = (
    "import json, sys, pytest\n"
    "class Worker:\n"
    "    def pytest_configure(self, config):\n"
    "        config.workerinput = {'workerid': 'gw0'}\n"
    "    @pytest.hookimpl(trylast=True)\n"
    "    def pytest_collection_modifyitems(self, items):\n"
    "        print(json.dumps([i.module.__name__ for i in items]))\n"
    "pytest.main(['-p', 'no:cacheprovider', '-n', '0', '--co', '-q', *sys.argv[1:]], plugins=[Worker()])\n")


def test_workers_take_the_longest_modules_first() -> None:
    """The order a worker gives xdist, from a real collection of the suite."""
    result = subprocess.run([sys.executable, "-c", WORKER_ORDER, "tests/e2e", "tests/conformance",
                             "tests/unit/test_units.py"], cwd=TESTS.parent, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    names = json.loads(result.stdout.splitlines()[0])
    modules = [module for i, module in enumerate(names) if i == 0 or names[i - 1] != module]
    assert len(modules) == len(set(modules))  # a module's tests stay together
    longest = max((m for m in SECONDS if m.startswith(("e2e.", "conformance."))), key=lambda m: SECONDS[m])
    assert modules[:2] == ["tests.unit.test_units", f"tests.{longest}"]  # the fast tier, then the longest
    # A family stays together: the modules asking for the CronJob clock's cluster run one after the other.
    cron = [modules.index(m) for m in ("tests.e2e.test_schedules", "tests.e2e.test_cli_backups_azure",
                                       "tests.conformance.test_kubectl_cronjobs")]
    assert sorted(cron) == list(range(min(cron), min(cron) + 3))


def test_xdist_gives_each_module_to_one_worker_whole(tmp_path: Path) -> None:
    """A real xdist run: a module's tests run on one worker, in their order (a test may build on the one
    before it; xdist's own loadgroup marks are lost on pytest 9.2's node IDs)."""
    project = tmp_path / "project"
    (project / "tests" / "e2e").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "conftest.py").write_text(CONFTEST.format(repo=str(TESTS.parent)))
    for name in ("a", "b", "c"):
        (project / "tests" / "e2e" / f"test_{name}.py").write_text(
            "import pytest\nSEEN = []\n\n"
            "@pytest.mark.parametrize('i', range(4))\n"
            "def test_step(i):\n    assert SEEN == list(range(i))\n    SEEN.append(i)\n\n"
            "class TestLater:\n    def test_after_all_steps(self):\n        assert SEEN == [0, 1, 2, 3]\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "3", "-v",
                             "--dist", "loadscope", "--no-loadscope-reorder", "tests"],
                            cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = re.findall(r"^\[(gw\d)\] .*PASSED (tests/e2e/test_\w+\.py)::", result.stdout, re.MULTILINE)
    assert len(ran) == 15, result.stdout
    workers: dict[str, set[str]] = {}
    for worker, path in ran:
        workers.setdefault(path, set()).add(worker)
    assert all(len(w) == 1 for w in workers.values()), workers


def test_the_table_is_made_from_a_real_junit_report(tmp_path: Path) -> None:
    """`python -m tests.module_seconds JUNIT.xml`: each module's tests summed (a class's under its module),
    longest first, from the report a real pytest run writes."""
    project = tmp_path / "project"
    (project / "tests" / "e2e").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "__init__.py").write_text("")
    (project / "tests" / "e2e" / "__init__.py").write_text("")
    (project / "tests" / "e2e" / "test_a_short.py").write_text("def test_one():\n    pass\n")
    (project / "tests" / "e2e" / "test_b_long.py").write_text(
        "import time\n\ndef test_a():\n    time.sleep(0.3)\n\n"
        "class TestLater:\n    def test_b(self):\n        time.sleep(0.3)\n")
    junit = tmp_path / "junit.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
                             f"--junitxml={junit}", "tests"], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    table = from_junit(str(junit), floor=0)
    assert list(table) == ["e2e.test_b_long", "e2e.test_a_short"]  # by time, not by name
    assert from_junit(str(junit)) == {}  # both under the 15 s floor
    printed = subprocess.run([sys.executable, "-m", "tests.module_seconds", str(junit)], cwd=TESTS.parent,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == "SECONDS = {\n}\n", printed.stdout + printed.stderr


FAST_FAILS = "def test_fast():\n    assert {ok}\n"
LOOPBACK_RUNS = ("from pathlib import Path\n\ndef test_loopback():\n    Path({marker!r}).write_text('ran')\n")
CONFTEST = (
    "import sys\n"
    "sys.path.insert(0, {repo!r})\n"
    "from tests.fast_tier import FastTier\n"
    "from tests.ordering import ModuleScheduling, reorder\n\n"
    "def pytest_configure(config):\n"
    "    config.pluginmanager.register(FastTier(config), 'fast-tier')\n\n"
    "def pytest_collection_modifyitems(config, items):\n"
    "    reorder(items, distributed=hasattr(config, 'workerinput'))\n\n"
    "def pytest_xdist_make_scheduler(config, log):\n"
    "    return ModuleScheduling(config, log)\n")


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
                             "--dist", "loadscope", "--no-loadscope-reorder", "-q", "tests"],
                            cwd=project, capture_output=True, text=True, timeout=120)
    if fast_ok:
        assert result.returncode == 0, result.stdout + result.stderr
        assert marker.exists()
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 test(s) of the fast tier (tests/unit) failed: the loopback tiers did not run" in result.stdout
        assert not marker.exists()


def test_with_x_a_worker_waiting_for_the_fast_tier_stops_with_the_run(tmp_path: Path) -> None:
    """-x: the worker with the failing fast test stops before its other fast test, so the fast tier's outcome
    never completes; the other worker, done with its own fast tests, stops on the run's stop, at once
    (not after WAIT_SECONDS), and starts no loopback test."""
    project = tmp_path / "project"
    (project / "tests" / "unit").mkdir(parents=True)
    (project / "tests" / "e2e").mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "conftest.py").write_text(CONFTEST.format(repo=str(TESTS.parent)))
    # One module (one xdist group, one worker): its first test fails, its second never runs.
    (project / "tests" / "unit" / "test_fast_0.py").write_text(
        "import time\n\ndef test_fails():\n    time.sleep(2)\n    assert False\n\n"
        "def test_never_runs():\n    pass\n")
    (project / "tests" / "unit" / "test_fast_1.py").write_text("def test_ok():\n    pass\n")
    marker = tmp_path / "loopback-ran"
    (project / "tests" / "e2e" / "test_loop.py").write_text(LOOPBACK_RUNS.format(marker=str(marker)))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-x",
                             "--dist", "loadscope", "--no-loadscope-reorder", "-q", "tests"],
                            cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert not marker.exists()
