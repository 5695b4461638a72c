"""The one place the restore, its status, finalize and rollback make pods on the control-plane nodes (`NodePods`).

A `NodePod` is a short-lived busybox pod on one control-plane node that mounts the three host directories a
restore works on (our directory, the data dir's parent, /etc/kubernetes): staging, handing over, reading the
status files, finalizing. Every command runs through our exec layer and must exit 0. Beside it, a pod of the
cluster's own etcd image runs etcdctl once and exits (the restore itself, `etcdctl version`). The work itself
(exec, checked copies both ways, a start that says why it cannot run) is the one node pod's, `nodes.hostpod`:
the kube handle goes down from here only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr import units
from kubectl_dr.console import Console
from kubectl_dr.etcd import podrun
from kubectl_dr.etcd.errors import EtcdError, MemberError
from kubectl_dr.etcd.restore.nodescript import HOST_DATA_PARENT, HOST_DR, HOST_KUBERNETES
from kubectl_dr.etcd.restore.targets import DR_DIR, KUBERNETES_DIR, Target
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import Timeouts
from kubectl_dr.kube.pods import HelperPod, pod_name
from kubectl_dr.nodes import hostpod
from kubectl_dr.runs import Run

CONTAINER = "node"
DEADLINE_SECONDS = 2 * 3600


def _hostpath(name: str, path: str, mount: str, kind: str = "Directory") -> tuple[dict[str, Any], dict[str, Any]]:
    return pods.host_path_volume(name, path, kind), {"name": name, "mountPath": mount}


def manifest(target: Target, namespace: str, image: str, run: Run, dr_dir: str, kubernetes_dir: str,
             purpose: str) -> dict[str, Any]:
    parent = target.data_dir.rsplit("/", 1)[0] or "/"
    pairs = [_hostpath("kubectl-dr", dr_dir, HOST_DR, "DirectoryOrCreate"),
             _hostpath("kubernetes", kubernetes_dir, HOST_KUBERNETES),
             _hostpath("etcd-parent", parent, HOST_DATA_PARENT)]
    # Ends by itself (the deadline) even if the run that made it is killed and never deletes it.
    return pods.pod_manifest(
        pod_name("dr-etcd-restore", target.node), namespace, purpose=purpose, node=target.node,
        deadline=DEADLINE_SECONDS, labels=run.labels(), annotations=run.annotations(), volumes=[v for v, _ in pairs],
        containers=[{"name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 5 & wait $!; done"],
                     "volumeMounts": [m for _, m in pairs]}])


class NodePod:
    def __init__(self, kube: Kube, pod: HelperPod, target: Target, namespace: str) -> None:
        self.kube, self.pod, self.target, self.namespace = kube, pod, target, namespace

    def sh(self, script: str, *, stdin: bytes | None = None, what: str = "command") -> str:
        """Run a script in the pod; its stdout, exit status 0 required."""
        result, out = hostpod.run_in(self.kube, self.pod, CONTAINER, ["sh", "-c", script], stdin=stdin,
                                     timeouts=Timeouts(idle=300.0))
        result.check(f"{what} on node {self.target.node}")
        return out.decode(errors="replace")

    def send_file(self, local: Path, size: int, sha256: str, remote: str) -> None:
        """Copy a file to the node, checked on both sides: byte count and SHA-256 here and in the pod."""
        hostpod.send_file(self.kube, self.pod, CONTAINER, local, size, sha256, remote, where=self.target.node,
                          what="the snapshot")

    def fetch(self, remote: str, local: Path) -> None:
        """Copy a file from the node (a data dir's database), checked: what arrived against the size and SHA-256
        the pod reads there."""
        hostpod.fetch_file(self.kube, self.pod, CONTAINER, remote, local, where=self.target.node)

    def etcdctl(self, image: str, run: Run, name: str, command: list[str], volumes: list[tuple[str, str, str]],
                what: str) -> str:
        """A pod of its own on this node (etcdctl of the cluster's etcd image) that does its work and exits:
        its log, else an error that names the node."""
        return run_to_end(self.kube, image_pod(self.target, self.namespace, image, run, name, command, volumes),
                          self.target, what)

    def delete(self) -> None:
        self.pod.delete(wait=True, timeout=60)


def delete_all(nodes: list[NodePod]) -> None:
    """Every node pod deleted and waited for, side by side; the first error raised after all were tried."""
    pods.delete_together([n.pod for n in nodes])


@dataclass(frozen=True)
class NodePods:
    """Makes the pods a restore runs on the control-plane nodes: the kube handle, the namespace they run in and
    the helper image, given once."""

    kube: Kube
    namespace: str
    helper_image: str
    console: Console

    def start(self, targets: list[Target], run: Run, purpose: str) -> list[NodePod]:
        """A node pod on every target's node, running; none left behind when one cannot start. Every pod is
        created before the first is waited for, so the nodes' kubelets start them side by side: on three or five
        control-plane nodes the restore begins (and reads its result) that much sooner."""
        created: list[tuple[Target, pods.HelperPod]] = []
        try:
            for t in targets:
                spec = manifest(t, self.namespace, self.helper_image, run, DR_DIR, KUBERNETES_DIR, purpose)
                created.append((t, pods.create(self.kube, spec, what=f"etcd {purpose}")))
            for t, pod in created:
                podrun.wait_started(pod, t.member, console=self.console, helper_image=self.helper_image)
        except BaseException:
            # wait_started deleted the pod that could not start; the others go as well, side by side.
            pods.delete_together([pod for _, pod in created], quiet=True)
            raise
        return [NodePod(self.kube, pod, t, self.namespace) for t, pod in created]

    def etcdctl(self, t: Target, image: str, run: Run, name: str, command: list[str],
                volumes: list[tuple[str, str, str]], what: str, timeout: float = 1800.0) -> str:
        """etcdctl once in a pod of the cluster's own etcd image on the target's node: its log, else an error that
        names the node."""
        return run_to_end(self.kube, image_pod(t, self.namespace, image, run, name, command, volumes), t, what,
                          timeout)

    def tool_version(self, t: Target, image: str, run: Run) -> str:
        """The version of etcdctl in `image`, asked on the target's node (where the image is already pulled)."""
        log = self.etcdctl(t, image, run, "version", ["etcdctl", "version"], [], "etcdctl version", timeout=180)
        match = re.search(r"etcdctl version:\s*(\S+)", log)
        if not match:
            raise EtcdError(f"`etcdctl version` in {image} printed no version: {log.strip()[:300]!r}")
        return match.group(1)


def image_pod(t: Target, namespace: str, image: str, run: Run, name: str, command: list[str],
              volumes: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A pod of the cluster's own etcd image on the target's node that runs etcdctl once and exits."""
    return pods.pod_manifest(
        pod_name(f"dr-etcd-{name}", t.node), namespace, purpose=f"etcd-restore-{name}", node=t.node, deadline=3600,
        labels=run.labels(), annotations=run.annotations(),
        volumes=[pods.host_path_volume(n, p) for n, p, _ in volumes],
        containers=[{"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
                     "env": [{"name": "ETCDCTL_API", "value": "3"}],
                     "volumeMounts": [{"name": n, "mountPath": m} for n, _, m in volumes]}])


def run_to_end(kube: Kube, spec: dict[str, Any], target: Target, what: str, timeout: float = 1800.0) -> str:
    """A pod whose one container does its work and exits: its log when it succeeded, else an error."""
    ended = hostpod.run_to_end(kube, spec, what=what, timeout=timeout, tail_lines=200)
    if ended.succeeded:
        return ended.logs
    if ended.timed_out:
        raise MemberError(target.node, f"{what} on node {target.node} did not finish in {units.duration(timeout)}")
    # The last 30 lines: the hint is read on a terminal.
    tail = "\n".join(ended.logs.splitlines()[-30:]).strip()
    raise MemberError(target.node, f"{what} on node {target.node} failed: {ended.problem}", hint=tail or None)
