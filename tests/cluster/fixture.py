"""pytest fixtures that start loopback clusters for end-to-end and conformance tests.

- ``cluster``: one per session, 1 control plane + 1 worker, both exec protocols, etcd 3.5;
- ``cluster_factory(control_planes=3, workers=1, exec_protocols=("v4",), images=…, etcd_version="3.4",
  cron_period_seconds=2.0, external_etcd=True, private="name")``: other shapes, started on first use, shared by
  every test asking for the same shape (``private``: by none), parked when the tests need another shape (see
  ClusterPool), stopped at session end. ``etcd_version`` is "3.4" or "3.5" (default);
  ``cron_period_seconds`` makes one CronJob minute last that many seconds (control/cronjob.py);
  ``external_etcd`` runs etcd on hosts of its own, outside the cluster (control/external_etcd.py);
  ``rook_ceph=3`` adds Rook-Ceph's objects and a real quorum of 3 ceph-mon (rook_ceph.py);
  ``link_mbit`` limits every exec stream to that many Mbit/s each way (node/link.py).

A missing prerequisite (etcd, bwrap that can create sandboxes, busybox, kubectl) skips with the reason,
except under CI (environment variable CI set), where it fails: CI must never silently skip them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import etcd_versions
from tests.cluster import rook_ceph as rook_shape
from tests.cluster.__main__ import down, parse_protocols, start_member, stop_member, up
from tests.cluster.control.cronjob import CLOCK_ORIGIN_OPTION, compressed_clock
from tests.cluster.control.etcd_members import Member, members_from_state
from tests.cluster.control.kubeconfig import LIMITED_CONTEXT, write_policy
from tests.cluster.control.layout import Layout
from tests.cluster.control.processes import is_ours
from tests.ordering import Shape, matches, module_shapes, shape

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ("1.30", "1.33")
BUSYBOX = "/usr/bin/busybox"
BASH_STATIC = "/bin/bash-static"


def kubectl_path(version: str) -> Path:
    return KUBECTL_DIR / f"kubectl.{version}"


CEPH_BINARIES = ("/usr/bin/ceph-mon", "/usr/bin/monmaptool", "/usr/bin/ceph-authtool", "/usr/bin/ceph")


def missing_prerequisites(kubectl_versions: Sequence[str] = KUBECTL_VERSIONS, ceph: bool = False) -> list[str]:
    binaries = [BUSYBOX, BASH_STATIC, *(b for v in etcd_versions.VERSIONS.values() for b in v.binaries()),
                *(CEPH_BINARIES if ceph else ())]
    missing = [f"{p} not found" for p in binaries if not Path(p).exists()]
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        missing.append("bwrap not found")
    else:
        probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                "--unshare-pid", "--die-with-parent", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            missing.append(f"bwrap cannot create a sandbox here: {probe.stderr.strip()}")
    missing += [f"{kubectl_path(v)} not found" for v in kubectl_versions if not kubectl_path(v).exists()]
    return missing


def require_prerequisites(kubectl_versions: Sequence[str] = KUBECTL_VERSIONS, ceph: bool = False) -> None:
    missing = missing_prerequisites(kubectl_versions, ceph)
    if not missing:
        return
    reason = "loopback cluster prerequisites missing: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: end-to-end tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Cluster:
    """A running loopback cluster and helpers to drive it."""

    dir: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.dir)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def startup_seconds(self) -> float:
        return float(self.state.get("startup_seconds", 0.0))

    @property
    def startup_load_per_cpu(self) -> float:
        """The 1-minute load average per CPU when the last start-up ended (0 when not recorded)."""
        return float(self.state.get("startup_load_per_cpu", 0.0))

    @property
    def control_planes(self) -> list[str]:
        return list(self.state["nodes"]["control_planes"])

    @property
    def workers(self) -> list[str]:
        return list(self.state["nodes"]["workers"])

    @property
    def members(self) -> list[Member]:
        return members_from_state(self.state["etcd"]["members"])

    @property
    def etcd(self) -> etcd_versions.EtcdVersion:
        """The control plane's etcd version (its binaries on this machine: etcdctl, etcdutl for 3.5)."""
        return etcd_versions.VERSIONS[self.state["options"].get("etcd_version", "3.4")]

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.state['server']['port']}"

    @staticmethod
    def kubectl_path(version: str = KUBECTL_VERSIONS[-1]) -> Path:
        return kubectl_path(version)

    def kubectl(self, *args: str, version: str = KUBECTL_VERSIONS[-1], limited: bool = False,
                input: str | bytes | None = None, check: bool = True, timeout: float = 120.0,
                text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run real kubectl against this cluster (admin context unless `limited`)."""
        cmd = [str(kubectl_path(version)), f"--kubeconfig={self.kubeconfig}"]
        if limited:
            cmd.append(f"--context={LIMITED_CONTEXT}")
        cmd += list(args)
        if isinstance(input, str) and not text:
            input = input.encode()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[2:])} exited {result.returncode}:\n"
                                 f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}")
        return result

    def cron_clock(self, real: float | None = None) -> dt.datetime:
        """The CronJob controller's clock at real time `real` (now by default): compressed when the cluster
        runs with cron_period_seconds (control/cronjob.py)."""
        options = self.state["options"]
        return compressed_clock(time.time() if real is None else real, float(options[CLOCK_ORIGIN_OPTION]),
                                options.get("cron_period_seconds"))

    def stop_member(self, node: str) -> None:
        stop_member(self.layout, node)
        self.state = self.layout.read_state()

    def start_member(self, node: str) -> None:
        start_member(self.layout, node)
        self.state = self.layout.read_state()

    def parked(self, node: str) -> Path:
        """Where park_manifest puts a node's manifests: its /etc/kubernetes/stopped-manifests."""
        return self.layout.host_path(node, "/etc/kubernetes/stopped-manifests")

    def park_manifest(self, node: str, name: str) -> None:
        """Move a static pod manifest out of the node's manifests directory: the kubelet stops the pod."""
        self.parked(node).mkdir(parents=True, exist_ok=True)
        (self.layout.manifests(node) / name).replace(self.parked(node) / name)

    def unpark_manifest(self, node: str, name: str) -> None:
        """Move it back: the kubelet starts the pod again."""
        (self.parked(node) / name).replace(self.layout.manifests(node) / name)

    def write_policy(self, policy: dict[str, Any]) -> None:
        """Replace the RBAC rules of non-admin users: the server re-reads the file on the next request when its
        modification time changed, so the new file gets a later one even when written within the same tick."""
        path = self.layout.rbac_policy
        before = path.stat().st_mtime_ns if path.exists() else 0
        write_policy(self.layout, policy)
        if path.stat().st_mtime_ns <= before:
            later = before + 1_000_000
            os.utime(path, ns=(later, later))

    @property
    def rook(self) -> dict[str, Any]:
        rook: dict[str, Any] = self.layout.read_state()["rook_ceph"]
        return rook

    def stop_mon(self, mon_id: str, delete_store: bool = False) -> None:
        rook_shape.stop_mon(self.layout, self.rook, mon_id, delete_store)

    def start_mon(self, mon_id: str) -> None:
        rook_shape.start_mon(self.layout, self.rook, mon_id)

    def mon_status(self, mon_id: str) -> dict[str, Any] | None:
        return rook_shape.mon_status(self.rook, mon_id)

    def mon_store(self, mon_id: str) -> Path:
        m = next(m for m in rook_shape.mons_from_state(self.layout.read_state()) if m.id == mon_id)
        return self.layout.host_path(m.node, m.store_host_path)

    @property
    def running(self) -> bool:
        """Its server process is up (a test, or the pool between modules, may have stopped it)."""
        return is_ours(self.state.get("server", {}).get("pid"), str(self.layout.root))

    def start(self) -> None:
        """Start again (after `down`) on the same etcd data, ports and options."""
        self.state = up(self.layout, None, None, [], {})

    def restart(self) -> None:
        """Stop every process and start again on the same etcd data."""
        down(self.layout)
        self.start()

    def down(self) -> list[str]:
        stopped = down(self.layout)
        self.state = self.layout.read_state()
        return stopped


def start_cluster(directory: Path, *, control_planes: int = 1, workers: int = 1,
                  exec_protocols: Sequence[str] = (), images: dict[str, str] | None = None,
                  etcd_version: str = etcd_versions.DEFAULT, cron_period_seconds: float | None = None,
                  external_etcd: bool = False, rook_ceph: int = 0, link_mbit: float | None = None) -> Cluster:
    protocols = parse_protocols(",".join(exec_protocols)) if exec_protocols else []
    state = up(Layout(directory.resolve()), control_planes, workers, protocols, dict(images or {}),
               etcd_version, cron_period_seconds, external_etcd, rook_ceph, link_mbit)
    return Cluster(directory.resolve(), state)


@dataclass
class PoolCounts:
    """What the pool's clusters cost a run: printed in the terminal summary, compared across runs."""

    cold_starts: list[tuple[str, float]] = field(default_factory=list)
    restarts: list[tuple[str, float]] = field(default_factory=list)
    parks: int = 0

    def summary(self) -> str:
        cold = sum(s for _, s in self.cold_starts)
        warm = sum(s for _, s in self.restarts)
        # Which clusters (their directory's name without mktemp's number): under xdist a shape that more
        # than one worker started shows here.
        names = collections.Counter(name.rstrip("0123456789") for name, _ in self.cold_starts)
        started = ", ".join(f"{n} ×{k}" if k > 1 else n for n, k in sorted(names.items()))
        return (f"loopback cluster pool: {len(self.cold_starts)} cold starts ({cold:.0f}s: {started}), "
                f"{len(self.restarts)} restarts ({warm:.0f}s), {self.parks} clusters parked")


COUNTS = PoolCounts()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_prerequisites()
    began = time.monotonic()
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    COUNTS.cold_starts.append((c.dir.name, time.monotonic() - began))
    try:
        yield c
    finally:
        c.down()


ClusterFactory = Callable[..., Cluster]


class ClusterPool:
    """The factory's clusters, one per set of options, parked only when the tests need another shape.

    A dozen idle clusters (a server and one to three etcd members each, heartbeating) take about a core of
    the 2-core CI machine, which slows every later test and makes the timing-sensitive ones flaky; starting
    one again costs seconds. So a cluster keeps running from module to module while the tests use it, and is
    parked (stopped, its etcd data, ports and options kept) when a module asks for a shape that is not
    running and has not used it: the next module that asks for it starts it again, as a rebooted control
    plane would. The test ordering in tests/conftest.py puts the modules of one shape next to each other.

    `private` gives a module a cluster of its own that no other module shares (its tests change the nodes),
    still started, parked and stopped by the pool."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.clusters: dict[Shape, Cluster] = {}
        self.counts = COUNTS
        self.module: str | None = None
        self.used: set[Shape] = set()

    def enter(self, module: str) -> None:
        """A test of `module` is about to be set up: what this module uses starts from nothing. The pool is
        made by the first test that asks for a cluster, after that test was entered: what it got before its
        first `enter` belongs to that same module and is kept (else the module's first cluster was parked
        under it when it asked for a second shape)."""
        if self.module is None:
            self.module = module
        elif module != self.module:
            self.module, self.used = module, set()

    def get(self, control_planes: int = 3, workers: int = 1, exec_protocols: Sequence[str] = ("v5", "v4"),
            images: dict[str, str] | None = None, etcd_version: str = etcd_versions.DEFAULT,
            cron_period_seconds: float | None = None, external_etcd: bool = False, rook_ceph: int = 0,
            link_mbit: float | None = None, private: str | None = None) -> Cluster:
        key = shape({"control_planes": control_planes, "workers": workers, "exec_protocols": exec_protocols,
                     "images": images, "etcd_version": etcd_version, "cron_period_seconds": cron_period_seconds,
                     "external_etcd": external_etcd, "rook_ceph": rook_ceph, "link_mbit": link_mbit,
                     "private": private})
        self.used.add(key)
        c = self.clusters.get(key)
        if c is None:
            require_prerequisites(ceph=bool(rook_ceph))
            self.park(keep=self.used)
            name = private or f"cluster-{control_planes}cp"
            began = time.monotonic()
            c = self.clusters[key] = start_cluster(
                self.tmp_path_factory.mktemp(name), control_planes=control_planes,
                workers=workers, exec_protocols=exec_protocols, images=images, etcd_version=etcd_version,
                cron_period_seconds=cron_period_seconds, external_etcd=external_etcd, rook_ceph=rook_ceph,
                link_mbit=link_mbit)
            self.counts.cold_starts.append((c.dir.name, time.monotonic() - began))
        elif not c.running:
            self.park(keep=self.used)
            began = time.monotonic()
            c.start()
            self.counts.restarts.append((c.dir.name, time.monotonic() - began))
        return c

    def park(self, keep: Collection[Shape] = ()) -> None:
        """Stop every running cluster but those of a shape in `keep` (wildcards match), side by side: each
        server gives its pods their grace periods."""
        running = [c for key, c in self.clusters.items()
                   if c.running and not any(matches(key, k) for k in keep)]
        if not running:
            return
        self.counts.parks += len(running)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(running)) as pool:
            for done in [pool.submit(c.down) for c in running]:
                done.result()


_pools: list[ClusterPool] = []


@pytest.fixture(scope="session")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    pool = ClusterPool(tmp_path_factory)
    _pools.append(pool)
    try:
        yield pool.get
    finally:
        _pools.remove(pool)
        pool.park()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last test of a module, once its module fixtures are finalized: park the pool's clusters the
    next module does not ask for."""
    yield
    if nextitem is not None and nextitem.module is not item.module:  # type: ignore[attr-defined]
        wanted = module_shapes(nextitem.module)  # type: ignore[attr-defined]
        for pool in _pools:
            pool.park(keep=wanted)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test's fixtures are set up: tell the pool which module asks (see ClusterPool)."""
    for pool in _pools:
        pool.enter(item.module.__name__)  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its pool's counts to the controller, which prints the run's sum."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["pool_counts"] = {"cold_starts": [list(c) for c in COUNTS.cold_starts],
                                 "restarts": [list(r) for r in COUNTS.restarts], "parks": COUNTS.parks}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    counts = (getattr(node, "workeroutput", None) or {}).get("pool_counts")
    if counts:
        COUNTS.cold_starts += [(str(n), float(s)) for n, s in counts["cold_starts"]]
        COUNTS.restarts += [(str(n), float(s)) for n, s in counts["restarts"]]
        COUNTS.parks += int(counts["parks"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if COUNTS.cold_starts:
        terminalreporter.write_line(COUNTS.summary())
