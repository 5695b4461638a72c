"""`python -m tests.cluster up|down|status|stop-member|start-member`: the loopback cluster's entry point.

`up` writes the PKI and each control-plane node's kubeadm manifests, starts the server process (whose
kubelets run the static pods: etcd members, API server, controllers, scheduler) and returns once the cluster
is ready: every etcd member healthy, the API serving, every node Ready and every mirror pod present.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import etcd_versions
from tests.cluster import rook_ceph as rook_ceph_shape
from tests.cluster.control import etcd_members as em
from tests.cluster.control.cronjob import CLOCK_ORIGIN_OPTION
from tests.cluster.control.kubeconfig import ensure_default_policy, write_kubeconfig
from tests.cluster.control.layout import Layout
from tests.cluster.control.nodes import node_names
from tests.cluster.control.pki import generate_cluster_pki
from tests.cluster.control.ports import free_ports
from tests.cluster.control.processes import is_ours, stop_ours
from tests.cluster.control.static_pods import write_manifests

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 90.0
STOPPED_MANIFESTS = "/etc/kubernetes/stopped-manifests"  # where stop-member parks a node's etcd.yaml
EXEC_PROTOCOLS = ("v5", "v4")
SUBPROTOCOLS = {"v5": "v5.channel.k8s.io", "v4": "v4.channel.k8s.io"}
IMAGE_KINDS = ("busybox", "debian", "etcd")


class ClusterError(Exception):
    pass


def _marker(layout: Layout) -> str:
    return str(layout.root)


def _tls_context(layout: Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    ctx.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return ctx


def readyz(layout: Layout, port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=timeout,
                                    context=_tls_context(layout)) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _get(layout: Layout, port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=5,
                                context=_tls_context(layout)) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def expected_mirror_pods(layout: Layout, nodes: list[str]) -> set[tuple[str, str]]:
    """(namespace, name) of the mirror pod of every static pod file on the nodes (kubelet file rules)."""
    out: set[tuple[str, str]] = set()
    for node in nodes:
        d = layout.manifests(node)
        for path in sorted(d.iterdir()) if d.is_dir() else []:
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                meta = (yaml.safe_load(path.read_text()) or {}).get("metadata") or {}
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if meta.get("name"):
                out.add((meta.get("namespace") or "default", f"{meta['name']}-{node}"))
    return out


def not_ready(layout: Layout, port: int, nodes: list[str]) -> str | None:
    """What the cluster still lacks to be ready (None when nothing): nodes Ready, mirror pods present."""
    if not readyz(layout, port):
        return "the API server (/readyz)"
    try:
        items = _get(layout, port, "/api/v1/nodes")["items"]
        pods = _get(layout, port, "/api/v1/pods")["items"]
    except (OSError, urllib.error.URLError, ValueError) as e:
        return f"the API server ({e})"
    ready = {n["metadata"]["name"] for n in items if any(c.get("type") == "Ready" and c.get("status") == "True"
                                                         for c in (n.get("status") or {}).get("conditions") or [])}
    if missing := sorted(set(nodes) - ready):
        return f"nodes Ready: {', '.join(missing)}"
    present = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
    if missing_pods := sorted(expected_mirror_pods(layout, nodes) - present):
        return "mirror pods: " + ", ".join(f"{ns}/{name}" for ns, name in missing_pods)
    return None


def parse_images(values: list[str]) -> dict[str, str]:
    images: dict[str, str] = {}
    for value in values:
        name, sep, kind = value.rpartition("=")
        if not sep or not name or kind not in IMAGE_KINDS:
            raise ClusterError(f"--image wants NAME=busybox, NAME=debian or NAME=etcd, got {value!r}")
        images[name] = kind
    return images


def parse_protocols(value: str) -> list[str]:
    protocols = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in protocols if p not in EXEC_PROTOCOLS]
    if bad or not protocols:
        raise ClusterError(f"--exec-protocols takes a subset of {','.join(EXEC_PROTOCOLS)}, got {value!r}")
    return [SUBPROTOCOLS[p] for p in protocols]


def start_server(layout: Layout) -> int:
    layout.logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(layout.logs / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.serve", "--dir", str(layout.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO_ROOT, env=env, start_new_session=True)
    return proc.pid


def wait_ready(layout: Layout, pid: int, port: int, members: list[em.Member], nodes: list[str],
               timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    lacking: str | None = "the etcd members"
    while True:
        if not em.pid_alive(pid):
            tail = (layout.logs / "server.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"the server exited during start-up; end of logs/server.log:\n{tail}")
        if lacking != "the etcd members" or all(em.healthy(m) for m in members):
            lacking = not_ready(layout, port, nodes)
        if lacking is None:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the cluster was not ready within {timeout:.0f}s, still waiting for {lacking} "
                               "(logs/server.log)")
        time.sleep(0.1)


def up(layout: Layout, control_planes: int | None, workers: int | None, protocols: list[str],
       images: dict[str, str], etcd_version: str | None = None, cron_period_seconds: float | None = None,
       external_etcd: bool = False, rook_ceph: int = 0, link_mbit: float | None = None) -> dict[str, Any]:
    started = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = layout.read_state() if layout.state_file.exists() else {}
    if state and is_ours(state.get("server", {}).get("pid"), _marker(layout)):
        raise ClusterError(f"a cluster is already running in {layout.root}; run `down` first")
    if state:
        # Restart on the same etcd data: the node set, ports and etcd version stay what they were, and so
        # do the nodes' manifests (a kubelet restart does not rewrite them).
        cps, wks = state["nodes"]["control_planes"], state["nodes"]["workers"]
        if (control_planes is not None and control_planes != len(cps)) or (workers is not None and workers != len(wks)):
            # A restart keeps its nodes (their etcd members and pods live in DIR): asked for another shape, say
            # so rather than start the old one under a command line that names a different cluster.
            raise ClusterError(f"the cluster in {layout.root} has {len(cps)} control plane(s) and {len(wks)} "
                               f"worker(s); it restarts with them (another shape needs another --dir)")
        if external_etcd and not state.get("options", {}).get("external_etcd"):
            raise ClusterError(f"the cluster in {layout.root} runs etcd as static pods; it cannot restart with "
                               "--external-etcd (another --dir)")
        members = em.members_from_state(state["etcd"]["members"])
        api_port = int(state["server"]["port"])
        options = {**state.get("options", {})}
        options.setdefault("etcd_version", "3.4")  # clusters from before the choice ran Debian 12's 3.4
        if etcd_version and etcd_version != options["etcd_version"]:
            raise ClusterError(f"the cluster in {layout.root} runs etcd {options['etcd_version']}; "
                               f"it cannot restart on {etcd_version}")
        if protocols:
            options["exec_protocols"] = protocols
        if images:
            options["images"] = {**options.get("images", {}), **images}
        if cron_period_seconds is not None:
            options["cron_period_seconds"] = cron_period_seconds
        if rook_ceph and not state.get("rook_ceph"):
            raise ClusterError(f"the cluster in {layout.root} was made without Rook-Ceph; it cannot restart with it")
        if link_mbit is not None:
            options["link_mbit"] = link_mbit or None  # 0 on a restart: unlimited again
        options.setdefault(CLOCK_ORIGIN_OPTION, time.time())  # clusters from before the option
        fresh = False
    else:
        cps, wks = node_names(1 if control_planes is None else control_planes, 1 if workers is None else workers)
        # An external etcd runs on hosts of its own (etcd-1…, one per control plane), outside the cluster.
        members = em.plan_members(em.external_hosts(len(cps)) if external_etcd else cps)
        api_port = free_ports(1)[0]
        options = {"exec_protocols": protocols or list(SUBPROTOCOLS.values()), "images": images,
                   "etcd_version": etcd_version or etcd_versions.DEFAULT,
                   "cron_period_seconds": cron_period_seconds, "external_etcd": external_etcd,
                   "link_mbit": link_mbit or None, CLOCK_ORIGIN_OPTION: time.time()}
        fresh = True
    for d in (layout.pki, layout.images, layout.storage, layout.pods, layout.logs):
        d.mkdir(parents=True, exist_ok=True)
    for node in [*cps, *wks]:
        layout.node(node).mkdir(parents=True, exist_ok=True)
    external = bool(options.get("external_etcd"))
    generate_cluster_pki(layout, [*cps, *(m.name for m in members if external)])
    if fresh:
        write_manifests(layout, members, api_port, options["etcd_version"], external_on=cps if external else None)
        for m in members:
            # etcd wants its data dir private (it warns about wider modes); kubeadm creates it 0700.
            layout.etcd_data(m.name).mkdir(parents=True, exist_ok=True)
            layout.etcd_data(m.name).chmod(0o700)
    write_kubeconfig(layout, api_port)
    ensure_default_policy(layout)
    # Rook's mons go to the workers (control planes are tainted), round robin; a restart keeps its own.
    rook = rook_ceph_shape.plan(rook_ceph, wks or cps) if fresh and rook_ceph else state.get("rook_ceph")
    state = {
        "dir": str(layout.root),
        "nodes": {"control_planes": cps, "workers": wks},
        "etcd": {"members": em.members_to_state(members)},
        "server": {"port": api_port, "pid": None},
        "options": options,
        **({"rook_ceph": rook} if rook else {}),
    }
    layout.write_state(state)
    server_pid = start_server(layout)
    state["server"]["pid"] = server_pid
    layout.write_state(state)
    try:
        wait_ready(layout, server_pid, api_port, members, [*cps, *wks])
        if rook and fresh:
            rook_ceph_shape.deploy(layout, rook)
    except (ClusterError, rook_ceph_shape.RookError):
        down(layout)
        raise
    state["startup_seconds"] = round(time.monotonic() - started, 2)
    # The machine's run queue meanwhile (1-minute load average per CPU): what a start-up time is read against.
    state["startup_load_per_cpu"] = round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    layout.write_state(state)
    return state


def down(layout: Layout) -> list[str]:
    if not layout.state_file.exists():
        raise ClusterError(f"no cluster state in {layout.root}")
    state = layout.read_state()
    stopped = []
    # The server holds every pod, etcd included (their sandboxes die with it): it stops them in order.
    if stop_ours(state.get("server", {}).get("pid"), _marker(layout), timeout=30.0):
        stopped.append(f"server (pid {state['server']['pid']})")
    state.setdefault("server", {})["pid"] = None
    layout.write_state(state)
    return stopped


def _member(layout: Layout, node: str) -> em.Member:
    state = layout.read_state()
    for m in em.members_from_state(state["etcd"]["members"]):
        if m.name == node:
            return m
    raise ClusterError(f"{node} is not a control-plane node of this cluster "
                       f"(members: {', '.join(str(m['name']) for m in state['etcd']['members'])})")


def _wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def listening(port: int) -> bool:
    """Whether a socket listens on the port, read as `ss -ltn` reads it: from the kernel's TCP tables. No
    connection is made: a connect waits for a handshake, which a loaded machine can delay past any short
    timeout, and a member still listening then looked stopped (`status`) or stopped too early (stop_member)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st …; addresses HEX:PORT, 0A = LISTEN
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def stop_member(layout: Layout, node: str, timeout: float = 120.0) -> None:
    """As on a kubeadm node: move etcd.yaml out of the manifests directory; the kubelet stops the member."""
    member = _member(layout, node)
    src = layout.manifests(node) / "etcd.yaml"
    if layout.read_state()["options"].get("external_etcd"):
        em.disabled_flag(layout.node(node)).parent.mkdir(parents=True, exist_ok=True)
        em.disabled_flag(layout.node(node)).touch()  # `systemctl stop etcd` on that host
    elif src.exists():
        dest = layout.host_path(node, STOPPED_MANIFESTS) / "etcd.yaml"
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dest)
    _wait(lambda: not listening(member.client_port), f"etcd on {node} to stop", timeout)


def start_member(layout: Layout, node: str, timeout: float = 120.0) -> None:
    """Move etcd.yaml back; the kubelet starts the member on whatever data dir is there then."""
    member = _member(layout, node)
    parked = layout.host_path(node, STOPPED_MANIFESTS) / "etcd.yaml"
    em.disabled_flag(layout.node(node)).unlink(missing_ok=True)
    if parked.exists():
        parked.replace(layout.manifests(node) / "etcd.yaml")
    _wait(lambda: em.healthy(member), f"etcd on {node} to be healthy", timeout)


def status(layout: Layout) -> dict[str, Any]:
    state = layout.read_state()
    marker = _marker(layout)
    members = em.members_from_state(state["etcd"]["members"])
    server_pid = state.get("server", {}).get("pid")
    port = int(state["server"]["port"])
    return {
        "dir": str(layout.root),
        "kubeconfig": str(layout.kubeconfig),
        "server": {"pid": server_pid, "running": is_ours(server_pid, marker),
                   "url": f"https://127.0.0.1:{port}", "ready": readyz(layout, port)},
        "etcd": [{"node": m.name, "endpoint": m.client_url,
                  "manifest": (layout.manifests(m.name) / "etcd.yaml").exists(),
                  "running": listening(m.client_port), "healthy": em.healthy(m)}
                 for m in members],
        "nodes": state["nodes"],
        "options": state.get("options", {}),
    }


def _rook_state(layout: Layout) -> dict[str, Any]:
    rook: dict[str, Any] | None = layout.read_state().get("rook_ceph")
    if not rook:
        raise ClusterError(f"the cluster in {layout.root} has no Rook-Ceph (start it with up --rook-ceph N)")
    return rook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a cluster in DIR (or restart the one there) in the background")
    p_up.add_argument("--dir", required=True, type=Path)
    p_up.add_argument("--control-planes", type=int, default=None, help="default 1 (a restart keeps its own)")
    p_up.add_argument("--workers", type=int, default=None, help="default 1 (a restart keeps its own)")
    p_up.add_argument("--exec-protocols", default="", help="subset of v5,v4 offered for exec (default both)")
    p_up.add_argument("--image", action="append", default=[], metavar="NAME=busybox|debian|etcd",
                      help="serve image NAME from the busybox, debian or etcd root filesystem")
    p_up.add_argument("--etcd-version", choices=sorted(etcd_versions.VERSIONS), default=None,
                      help=f"etcd of the control plane (default {etcd_versions.DEFAULT}; a restart keeps its own)")
    p_up.add_argument("--external-etcd", action="store_true",
                      help="etcd on hosts of its own (etcd-1…, one per control plane) run by the server process, "
                           "not as static pods; the API servers use every member")
    p_up.add_argument("--cron-period-seconds", type=float, default=None, metavar="N",
                      help="test-only: CronJob schedules run on a clock where one minute lasts N seconds")
    p_up.add_argument("--link-mbit", type=float, default=None, metavar="N",
                      help="test-only: exec streams move at most N Mbit/s each way, as over a slow network "
                           "link (0 on a restart: unlimited again)")
    for name, text in (("down", "stop every process of the cluster in DIR (files are kept)"),
                       ("status", "show the cluster's processes and health")):
        sub.add_parser(name, help=text).add_argument("--dir", required=True, type=Path)
    for name, text in (("stop-member", "stop the etcd member of a control-plane node (moves etcd.yaml out of "
                                       "the node's manifests directory, as on a kubeadm node)"),
                       ("start-member", "move it back and wait until the member is healthy")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", required=True, type=Path)
        p.add_argument("node")
    p_up.add_argument("--rook-ceph", type=int, default=0, metavar="N",
                      help="Rook-Ceph's objects in namespace rook-ceph with a real quorum of N ceph-mon (rook_ceph.py)")
    for name, text in (("stop-mon", "take a Rook mon away: kill its process, move its store aside (or delete it)"),
                       ("start-mon", "put a stopped mon's store back and restart its pod")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", required=True, type=Path)
        p.add_argument("mon", metavar="NAME", help="the mon's id (a, b, …)")
        if name == "stop-mon":
            p.add_argument("--delete-store", action="store_true", help="delete the store instead of keeping it")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    try:
        if args.command == "up":
            if (args.control_planes is not None and args.control_planes < 1) or \
                    (args.workers is not None and args.workers < 0):
                raise ClusterError("--control-planes must be at least 1 and --workers at least 0")
            protocols = parse_protocols(args.exec_protocols) if args.exec_protocols else []
            if args.cron_period_seconds is not None and args.cron_period_seconds <= 0:
                raise ClusterError("--cron-period-seconds must be positive")
            if args.link_mbit is not None and args.link_mbit < 0:
                raise ClusterError("--link-mbit must be positive (or 0 for unlimited)")
            state = up(layout, args.control_planes, args.workers, protocols, parse_images(args.image),
                       args.etcd_version, args.cron_period_seconds, args.external_etcd, args.rook_ceph,
                       args.link_mbit)
            print(f"loopback cluster up in {state['startup_seconds']}s: https://127.0.0.1:{state['server']['port']} "
                  f"(etcd {state['options']['etcd_version']})")
            print(f"  export KUBECONFIG={layout.kubeconfig}")
            print("  kubectl get nodes                       # as kubernetes-admin (context loopback-admin)")
            print("  kubectl --context loopback-limited get pods   # as dr-limited (rbac-policy.yaml)")
            print(f"  python -m tests.cluster down --dir {layout.root}")
        elif args.command == "down":
            for line in down(layout):
                print(f"stopped {line}")
        elif args.command == "status":
            print(json.dumps(status(layout), indent=2))
        elif args.command == "stop-member":
            stop_member(layout, args.node)
        elif args.command == "start-member":
            start_member(layout, args.node)
        elif args.command == "stop-mon":
            rook_ceph_shape.stop_mon(layout, _rook_state(layout), args.mon, args.delete_store)
        elif args.command == "start-mon":
            rook_ceph_shape.start_mon(layout, _rook_state(layout), args.mon)
    except (ClusterError, rook_ceph_shape.RookError, TimeoutError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
