"""`python -m tests.cluster up|down|status|stop-member|start-member`: the loopback cluster's entry point."""

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
from pathlib import Path
from typing import Any

from tests.cluster.control import etcd_members as em
from tests.cluster.control.kubeconfig import ensure_default_policy, write_kubeconfig
from tests.cluster.control.layout import Layout
from tests.cluster.control.nodes import node_names
from tests.cluster.control.pki import generate_cluster_pki
from tests.cluster.control.ports import free_ports
from tests.cluster.control.processes import is_ours, stop_ours
from tests.cluster.control.static_pods import write_manifests

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
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


def parse_images(values: list[str]) -> dict[str, str]:
    images: dict[str, str] = {}
    for value in values:
        name, sep, kind = value.rpartition("=")
        if not sep or not name or kind not in IMAGE_KINDS:
            raise ClusterError(f"--image wants NAME=busybox or NAME=etcd, got {value!r}")
        images[name] = kind
    return images


def parse_protocols(value: str) -> list[str]:
    protocols = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in protocols if p not in EXEC_PROTOCOLS]
    if bad or not protocols:
        raise ClusterError(f"--exec-protocols takes a subset of {','.join(EXEC_PROTOCOLS)}, got {value!r}")
    return [SUBPROTOCOLS[p] for p in protocols]


def start_members(layout: Layout, members: list[em.Member], timeout: float = 30.0) -> dict[str, int]:
    # All at once: a multi-member cluster only elects a leader once a quorum of peers is up.
    pids = {m.name: em.start_member(layout, m, members) for m in members}
    try:
        em.wait_healthy(members, pids, timeout)
    except Exception:
        for pid in pids.values():
            stop_ours(pid, _marker(layout))
        raise
    return pids


def start_server(layout: Layout) -> int:
    layout.logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(layout.logs / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.serve", "--dir", str(layout.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO_ROOT, env=env, start_new_session=True)
    return proc.pid


def wait_ready(layout: Layout, pid: int, port: int, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not readyz(layout, port):
        if not em.pid_alive(pid):
            tail = (layout.logs / "server.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"the server exited during start-up; end of logs/server.log:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"the server did not answer /readyz within {timeout:.0f}s (logs/server.log)")
        time.sleep(0.1)


def up(layout: Layout, control_planes: int, workers: int, protocols: list[str],
       images: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = layout.read_state() if layout.state_file.exists() else {}
    if state and is_ours(state.get("server", {}).get("pid"), _marker(layout)):
        raise ClusterError(f"a cluster is already running in {layout.root}; run `down` first")
    if state:
        # Restart on the same etcd data: the node set and ports stay what they were.
        cps, wks = state["nodes"]["control_planes"], state["nodes"]["workers"]
        members = em.members_from_state(state["etcd"]["members"])
        api_port = int(state["server"]["port"])
        options = {**state.get("options", {})}
        if protocols:
            options["exec_protocols"] = protocols
        if images:
            options["images"] = {**options.get("images", {}), **images}
    else:
        cps, wks = node_names(control_planes, workers)
        members = em.plan_members(cps)
        api_port = free_ports(1)[0]
        options = {"exec_protocols": protocols or list(SUBPROTOCOLS.values()), "images": images}
    for d in (layout.pki, layout.images, layout.storage, layout.pods, layout.logs):
        d.mkdir(parents=True, exist_ok=True)
    for node in [*cps, *wks]:
        layout.node(node).mkdir(parents=True, exist_ok=True)
    generate_cluster_pki(layout, cps)
    write_manifests(layout, members, api_port)
    write_kubeconfig(layout, api_port)
    ensure_default_policy(layout)
    state = {
        "dir": str(layout.root),
        "nodes": {"control_planes": cps, "workers": wks},
        "etcd": {"members": em.members_to_state(members), "pids": {}},
        "server": {"port": api_port, "pid": None},
        "options": options,
    }
    layout.write_state(state)
    pids = start_members(layout, members)
    state["etcd"]["pids"] = pids
    layout.write_state(state)
    server_pid = start_server(layout)
    state["server"]["pid"] = server_pid
    layout.write_state(state)
    try:
        wait_ready(layout, server_pid, api_port)
    except ClusterError:
        down(layout)
        raise
    state["startup_seconds"] = round(time.monotonic() - started, 2)
    layout.write_state(state)
    return state


def down(layout: Layout) -> list[str]:
    if not layout.state_file.exists():
        raise ClusterError(f"no cluster state in {layout.root}")
    state = layout.read_state()
    stopped = []
    marker = _marker(layout)
    # The server first: its pods run with --die-with-parent, and it must not see etcd vanish under it.
    if stop_ours(state.get("server", {}).get("pid"), marker):
        stopped.append(f"server (pid {state['server']['pid']})")
    state.setdefault("server", {})["pid"] = None
    for name, pid in (state.get("etcd", {}).get("pids") or {}).items():
        if stop_ours(pid, marker):
            stopped.append(f"etcd {name} (pid {pid})")
    state.setdefault("etcd", {})["pids"] = {}
    layout.write_state(state)
    return stopped


def _member(layout: Layout, node: str) -> tuple[dict[str, Any], em.Member, list[em.Member]]:
    state = layout.read_state()
    members = em.members_from_state(state["etcd"]["members"])
    for m in members:
        if m.name == node:
            return state, m, members
    raise ClusterError(f"{node} is not a control-plane node of this cluster "
                       f"(members: {', '.join(m.name for m in members)})")


def stop_member(layout: Layout, node: str) -> None:
    state, _, _ = _member(layout, node)
    stop_ours(state["etcd"]["pids"].get(node), _marker(layout))
    state["etcd"]["pids"].pop(node, None)
    layout.write_state(state)


def start_member(layout: Layout, node: str) -> None:
    state, member, members = _member(layout, node)
    if is_ours(state["etcd"]["pids"].get(node), _marker(layout)):
        return
    pid = em.start_member(layout, member, members)
    state["etcd"]["pids"][node] = pid
    layout.write_state(state)
    em.wait_healthy([member], {node: pid}, 30.0)


def status(layout: Layout) -> dict[str, Any]:
    state = layout.read_state()
    marker = _marker(layout)
    members = em.members_from_state(state["etcd"]["members"])
    server_pid = state.get("server", {}).get("pid")
    return {
        "dir": str(layout.root),
        "kubeconfig": str(layout.kubeconfig),
        "server": {"pid": server_pid, "running": is_ours(server_pid, marker),
                   "url": f"https://127.0.0.1:{state['server']['port']}",
                   "ready": readyz(layout, int(state["server"]["port"]))},
        "etcd": [{"node": m.name, "endpoint": m.client_url, "pid": state["etcd"]["pids"].get(m.name),
                  "running": is_ours(state["etcd"]["pids"].get(m.name), marker), "healthy": em.healthy(m)}
                 for m in members],
        "nodes": state["nodes"],
        "options": state.get("options", {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a cluster in DIR (or restart the one there) in the background")
    p_up.add_argument("--dir", required=True, type=Path)
    p_up.add_argument("--control-planes", type=int, default=1)
    p_up.add_argument("--workers", type=int, default=1)
    p_up.add_argument("--exec-protocols", default="", help="subset of v5,v4 offered for exec (default both)")
    p_up.add_argument("--image", action="append", default=[], metavar="NAME=busybox|debian|etcd",
                      help="serve image NAME from the busybox or etcd root filesystem")
    for name, text in (("down", "stop every process of the cluster in DIR (files are kept)"),
                       ("status", "show the cluster's processes and health")):
        sub.add_parser(name, help=text).add_argument("--dir", required=True, type=Path)
    for name, text in (("stop-member", "stop the etcd member of a control-plane node"),
                       ("start-member", "start it again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", required=True, type=Path)
        p.add_argument("node")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    try:
        if args.command == "up":
            if args.control_planes < 1 or args.workers < 0:
                raise ClusterError("--control-planes must be at least 1 and --workers at least 0")
            protocols = parse_protocols(args.exec_protocols) if args.exec_protocols else []
            state = up(layout, args.control_planes, args.workers, protocols, parse_images(args.image))
            print(f"loopback cluster up in {state['startup_seconds']}s: https://127.0.0.1:{state['server']['port']}")
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
    except (ClusterError, TimeoutError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
