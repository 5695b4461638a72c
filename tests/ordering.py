"""The order the suite runs in: the fast tier first, then the loopback tests grouped by cluster shape.

Markers come from the directory a test lives in (one table here, so they cannot drift from the layout):
`unit`, `loopback` (the loopback cluster's own parts), `conformance`, `e2e`, `release`.

Inside the loopback tiers, modules are ordered so that the modules asking the cluster pool for one shape
run next to each other: the pool then parks a cluster only when the next module wants another shape
(tests/cluster/fixture.py). A module's shapes are read from its `cluster_factory(...)` calls, their
keywords evaluated against the factory's defaults and the module's own constants; what cannot be evaluated
there (a fixture parameter) stays a wildcard. The order is only an optimization: every test still gets the
cluster it asks for, whatever order it runs in.

Under pytest-xdist every module is one unit of work (ModuleScheduling): a worker receives whole modules
(their module fixtures are set up once, their tests run in their order, a test may build on the one
before it), as it runs out of work.
Each worker has its own pool, so two workers running modules of one shape each start that shape: a cold
start costs 4-6 s, far less than one worker running every module of a shape while the others wait. The
modules are handed out longest first (tests/module_seconds.py), so the run does not end with one long
module alone, and the modules sharing a pool shape (a family) stay next to each other, placed where their
longest one would be: a worker taking its next module then likely finds its shape already running.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.module_seconds import SECONDS

TIERS = {"unit": "unit", "restic": "unit", "cluster_tests": "loopback", "conformance": "conformance", "e2e": "e2e",
         "release": "release"}
FAST = "unit"
# The pool's defaults (ClusterPool.get): a keyword left out has this value.
DEFAULTS = {"control_planes": 3, "workers": 1, "exec_protocols": ("v5", "v4"), "images": None,
            "etcd_version": "3.5", "cron_period_seconds": None, "external_etcd": False, "rook_ceph": 0,
            "link_mbit": None,
            "private": None}
WILDCARD = "*"

Shape = tuple[tuple[str, str], ...]


def tier(item: pytest.Item) -> str | None:
    """The tier of a test: the directory below tests/ it lives in."""
    try:
        below = item.path.relative_to(item.config.rootpath / "tests").parts
    except ValueError:
        return None
    return TIERS.get(below[0]) if len(below) > 1 else None


def _value(node: ast.expr, module: ModuleType) -> Any:
    if isinstance(node, ast.Name):
        return getattr(module, node.id, WILDCARD)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return WILDCARD


def shape(values: dict[str, Any]) -> Shape:
    """The shape of the factory's keywords (the pool's key): every keyword, defaults filled in."""
    full = {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}
    if isinstance(full["exec_protocols"], (list, tuple)):
        full["exec_protocols"] = tuple(full["exec_protocols"])
    if isinstance(full["images"], dict):
        full["images"] = tuple(sorted(full["images"].items())) or None
    return tuple(sorted((k, v if v == WILDCARD else repr(v)) for k, v in full.items()))


def matches(a: Shape, b: Shape) -> bool:
    """Whether two shapes may be the same cluster (a wildcard matches any value)."""
    return all(va == vb or WILDCARD in (va, vb) for (_, va), (_, vb) in zip(a, b, strict=True))


def module_shapes(module: ModuleType) -> frozenset[Shape]:
    """The shapes a module asks the pool for (its `cluster_factory(...)` calls)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return frozenset()
    return frozenset(
        shape({k.arg: _value(k.value, module) for k in node.keywords if k.arg})
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cluster_factory")


def _alike(a: frozenset[Shape], b: frozenset[Shape]) -> int:
    """How many shapes of `a` are among those of `b`."""
    return sum(1 for x in a if any(matches(x, y) for y in b))


def order_modules(modules: Sequence[ModuleType]) -> list[ModuleType]:
    """Modules that use no pooled cluster first (in their usual order), then, greedily, each next module
    the one sharing the most shapes with the one before (ties keep the usual order)."""
    shapes = {m: module_shapes(m) for m in modules}
    ordered = [m for m in modules if not shapes[m]]
    rest = [m for m in modules if shapes[m]]
    while rest:
        last = shapes[ordered[-1]] if ordered and shapes[ordered[-1]] else frozenset()
        best = max(rest, key=lambda m: _alike(last, shapes[m]))
        ordered.append(best)
        rest.remove(best)
    return ordered


def module_families(modules: Sequence[ModuleType]) -> dict[ModuleType, str]:
    """The family of each module: modules asking the pool for a shape in common (wildcards match) share one,
    named after the first of them; a module using no pooled cluster, or only private ones, is its own."""
    shapes = {m: module_shapes(m) for m in modules}
    root = {m: m for m in modules}

    def find(m: ModuleType) -> ModuleType:
        while root[m] is not m:
            m = root[m]
        return m

    pooled = [m for m in modules if shapes[m]]
    for i, a in enumerate(pooled):
        for b in pooled[i + 1:]:
            if _alike(shapes[a], shapes[b]):
                ra, rb = find(a), find(b)
                first, second = (ra, rb) if modules.index(ra) < modules.index(rb) else (rb, ra)
                root[second] = first
    return {m: f"pool:{find(m).__name__}" if shapes[m] else m.__name__ for m in modules}


def seconds(module: ModuleType, tests: int) -> float:
    """How long a module takes, roughly: its figure in tests/module_seconds.py, else a second per test."""
    return float(SECONDS.get(module.__name__.removeprefix("tests."), tests))


def longest_first(modules: Sequence[ModuleType], tests: dict[ModuleType, int]) -> list[ModuleType]:
    """The order for workers: the families by their longest module, longest first; inside a family its
    modules longest first. Ties keep the usual order (sorts are stable)."""
    family = module_families(modules)
    took = {m: seconds(m, tests[m]) for m in modules}
    longest: dict[str, float] = {}
    for m in modules:
        longest[family[m]] = max(longest.get(family[m], 0.0), took[m])
    return sorted(modules, key=lambda m: (-longest[family[m]], family[m], -took[m]))


def _module_of(item: pytest.Item) -> ModuleType | None:
    module = getattr(item, "module", None)
    return module if isinstance(module, ModuleType) else None


class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no type information
    """xdist's scheduling by scope, the scope being the test's module (its file), classes included, in the
    collection's order (`--no-loadscope-reorder`). Not `--dist loadgroup` with an `xdist_group` per module:
    xdist 3.8 marks a group by appending it to the item's node ID, which pytest 9.2's structured node IDs
    ignore, so every test was silently its own unit (pytest-xdist issue 1386), spread over the workers apart
    from the tests before it in its module. Not `--dist loadscope` either: it splits a module by class."""

    def _split_scope(self, nodeid: str) -> str:
        return nodeid.split("::", 1)[0]


def reorder(items: list[pytest.Item], distributed: bool = False) -> None:
    """Mark every item with its tier, then order: unit, the loopback tiers by shape, release, the rest.
    `distributed` (an xdist worker): inside the fast tier and the loopback tiers, longest first (see
    longest_first), so the workers end each together."""
    for item in items:
        name = tier(item)
        if name:
            item.add_marker(name)
    first = [i for i in items if tier(i) == FAST]
    loop = [i for i in items if tier(i) in ("loopback", "conformance", "e2e")]
    last = [i for i in items if i not in first and i not in loop]
    items[:] = [*_by_module(first, distributed, shaped=False), *_by_module(loop, distributed, shaped=True), *last]


def _by_module(items: list[pytest.Item], distributed: bool, shaped: bool) -> list[pytest.Item]:
    by_module: dict[ModuleType, list[pytest.Item]] = {}
    loose: list[pytest.Item] = []  # an item of no module (a doctest file): left where it was
    for item in items:
        module = _module_of(item)
        if module is None:
            loose.append(item)
        else:
            by_module.setdefault(module, []).append(item)
    modules = list(by_module)
    if distributed:
        modules = longest_first(modules, {m: len(by_module[m]) for m in modules})
    elif shaped:
        modules = order_modules(modules)
    return [*(i for m in modules for i in by_module[m]), *loose]
