"""The one way to work on a node: a helper pod pinned to it, with the node's directories mounted, and checked
operations in it (run a script, read and write a file, send and fetch a large one, each compared by size and
SHA-256 on both sides), started with a reason when it cannot run (`start_pod`, in the caller's terms).

The pod runs the helper image (busybox by default: sh, cat, mv, sha256sum, stat) as root, on the host's
node with every taint tolerated, and mounts only the directories it is given, each under /host (the node's
`/etc/kubernetes` is `/host/etc/kubernetes` in the pod), read-only unless asked otherwise. Its main process
is a dead-man loop: the pod ends by itself a few minutes after the run stops touching it, and at the
latest after `DEADLINE_SECONDS`.

Every read is compared with the size and SHA-256 the pod computed; every write goes to a dot-file beside
the target (the kubelet ignores dot-files in its manifests directory), is checked there, and only then
renamed over the target, so a broken stream never leaves half a file where a program reads it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError, DrError, VerificationError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult, Timeouts, bounded_input, open_exec
from kubectl_dr.runs import Heartbeat, Run
from kubectl_dr.runs.heartbeat import dead_man_script, pod_grace_seconds, touch_pod

HOST_ROOT = "/host"
CONTAINER = "host"
STATE_DIR = "/run/kubectl-dr"
ALIVE = f"{STATE_DIR}/alive"
DEADLINE_SECONDS = 2 * 3600
STUCK_AFTER = 15.0
_SHA256 = re.compile(r"^([0-9a-f]{64})\b")
CHUNK = 1 << 20  # stdin frames stay at most 1 MiB


# --- any helper pod on a node ------------------------------------------------------------------------------
def start_pod(kube: Kube, manifest: dict[str, Any], *, what: str, console: Console,
              explain: Callable[[pods.PodStartError], DrError] | None = None,
              timeout: float = 180.0, may_finish: Collection[str] = ()) -> pods.HelperPod:
    """Create the pod and wait until its containers run; delete it again if it cannot, and say why: in the
    cluster's words, or in the caller's (`explain`: an etcd member's certificate missing on the node, say)."""
    pod = pods.create(kube, manifest, what=what)
    wait_started(pod, console=console, explain=explain, timeout=timeout, may_finish=may_finish)
    return pod


def wait_started(pod: pods.HelperPod, *, console: Console,
                 explain: Callable[[pods.PodStartError], DrError] | None = None, timeout: float = 180.0,
                 may_finish: Collection[str] = ()) -> None:
    """Wait until a pod made by `pods.create` runs; delete it again if it cannot, and say why (see `start_pod`).
    Apart from the creation so that a caller can create pods on several nodes first and let them start side by
    side."""
    try:
        pods.wait_running(pod, timeout=timeout, stuck_after=STUCK_AFTER, progress=console.say,
                          may_finish=may_finish)
    except pods.PodStartError as exc:
        pod.delete(wait=True, timeout=60)
        if explain is None:
            raise
        raise explain(exc) from None
    except BaseException:
        pod.delete(wait=True, timeout=60)
        raise


@dataclass(frozen=True)
class Ended:
    """How a pod that runs one command to its end ended (`run_to_end`)."""

    succeeded: bool
    problem: str  # why it did not: the cluster's reason or the phase; "" when it ran out of time
    logs: str  # the last lines of its container (up to `tail_lines`)

    @property
    def timed_out(self) -> bool:
        return not self.succeeded and not self.problem


def run_to_end(kube: Kube, manifest: dict[str, Any], *, what: str, timeout: float, tail_lines: int = 30,
               poll: float = 0.5) -> Ended:
    """A pod whose one container does its work and exits: wait for it (at most `timeout`), read its log, and
    delete it whatever happened. Failing fast where the cluster already says why (an image that cannot be
    pulled, a crash), never taking an exit 0 for more than it is."""
    pod = pods.create(kube, manifest, what=what)
    container = str(manifest["spec"]["containers"][0]["name"])
    try:
        deadline = time.monotonic() + timeout
        first_seen: dict[str, float] = {}
        while True:
            obj = pod.get()
            phase = str((obj.get("status") or {}).get("phase") or "")
            if phase == "Succeeded":
                return Ended(True, "", pod.logs(container, tail_lines=tail_lines))
            problem = pods.diagnose(obj, first_seen, time.monotonic())
            if phase == "Failed" or problem:
                return Ended(False, problem or phase, pod.logs(container, tail_lines=tail_lines).strip())
            if time.monotonic() > deadline:
                return Ended(False, "", "")
            time.sleep(poll)
    finally:
        pod.delete(wait=True, timeout=60)


def run_in(kube: Kube, pod: pods.HelperPod, container: str, command: list[str], *, stdin: bytes | None = None,
           timeouts: Timeouts | None = None) -> tuple[ExecResult, bytes]:
    """One command in the pod: its result (status channel, stderr tail) and its whole stdout. `stdin` is sent
    bounded (`head -c N` where the protocol cannot close stdin)."""
    out = bytearray()
    if stdin is not None:
        command = bounded_input(command, len(stdin))
    stream = open_exec(kube, pod.namespace, pod.name, command, container=container, stdin=stdin is not None,
                       timeouts=timeouts)
    result = stream.run(stdin=[stdin] if stdin is not None else None, stdout=out.extend)
    return result, bytes(out)


def send_file(kube: Kube, pod: pods.HelperPod, container: str, local: Path, size: int, sha256: str, remote: str,
              *, where: str, what: str) -> None:
    """Copy a large file into the pod (`remote`, a path the pod sees), streamed, checked on both sides: byte count
    and SHA-256 here and in the pod, and only then renamed from `remote.part`. `size` and `sha256` are what the
    caller verified: a file that changed since is refused too. `where`: the node, for the messages."""
    q = shlex.quote(remote)
    script = f"cat > {q}.part && sha256sum {q}.part && wc -c < {q}.part && mv {q}.part {q}"
    stream = open_exec(kube, pod.namespace, pod.name, bounded_input(["sh", "-c", script], size),
                       container=container, stdin=True, timeouts=Timeouts(idle=None))
    digest = hashlib.sha256()
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        with open(local, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                sent += len(block)
                yield block

    out = bytearray()
    result = stream.run(stdin=chunks(), stdout=out.extend)
    result.check(f"copying {what} to node {where}")
    lines = out.decode(errors="replace").split("\n")
    match = _SHA256.match(lines[0]) if lines else None
    remote_size = lines[1].strip() if len(lines) > 1 else ""
    copied = f"{what} copied to node {where}"
    if sent != size or digest.hexdigest() != sha256:
        raise VerificationError(f"{local} changed after it was verified ({sent} bytes read, {size} expected)")
    if match is None or not remote_size.isdigit():
        raise VerificationError(f"{copied}: the pod printed no size and digest ({bytes(out[:200])!r})")
    if int(remote_size) % 2**32 != size % 2**32:
        raise VerificationError(f"{copied} is incomplete: {remote_size} of {size} bytes arrived")
    if match.group(1) != sha256:
        raise VerificationError(f"{copied} is damaged: SHA-256 {match.group(1)} there, {sha256} here")


def fetch_file(kube: Kube, pod: pods.HelperPod, container: str, remote: str, local: Path, *, where: str) -> None:
    """Copy a file from the pod (a data dir's database) to `local`, checked: what arrived against the size and
    SHA-256 the pod reads there. `where`: the node, for the messages."""
    q = shlex.quote(remote)
    result, out = run_in(kube, pod, container, ["sh", "-c", f"sha256sum {q} && wc -c < {q}"],
                         timeouts=Timeouts(idle=300.0))
    result.check(f"reading {remote} on node {where}")
    lines = out.decode(errors="replace").split("\n")
    match = _SHA256.match(lines[0]) if lines else None
    digest = hashlib.sha256()
    size = 0
    with open(local, "wb") as f:
        def sink(block: bytes) -> None:
            nonlocal size
            f.write(block)
            digest.update(block)
            size += len(block)

        stream = open_exec(kube, pod.namespace, pod.name, ["cat", remote], container=container, stdin=False,
                           timeouts=Timeouts(idle=300.0))
        stream.run(stdout=sink).check(f"copying {remote} from node {where}")
    if match is None or len(lines) < 2 or lines[1].strip() != str(size) or match.group(1) != digest.hexdigest():
        raise VerificationError(f"{remote} copied from node {where} differs from the file there "
                                f"({size} bytes arrived, the pod printed {' '.join(lines)[:200]!r})")


@dataclass(frozen=True)
class HostMount:
    """A directory of the node, mounted at /host/DIR in the pod."""

    host_path: str
    read_only: bool = True
    create: bool = False  # DirectoryOrCreate: for a write to a node that may not have the directory yet

    @property
    def mount_path(self) -> str:
        return HOST_ROOT + _norm(self.host_path)


@dataclass(frozen=True)
class FileStat:
    kind: str  # "regular file", "directory", "symbolic link", …
    mode: int  # permission bits
    uid: int
    gid: int
    size: int


def _norm(path: str) -> str:
    """An absolute, normalised path (a leading `//` stays `//` in POSIX normpath: strip it first)."""
    return posixpath.normpath("/" + path.lstrip("/"))


def manifest(node: str, namespace: str, mounts: list[HostMount], *, image: str, purpose: str, run: Run,
             lease: str | None) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "state", "emptyDir": {}}]
    volume_mounts: list[dict[str, Any]] = [{"name": "state", "mountPath": STATE_DIR}]
    for index, mount in enumerate(mounts):
        name = f"host-{index}"
        # Directory, not DirectoryOrCreate: a path that is not there is a finding, not something to make.
        kind = "DirectoryOrCreate" if mount.create else "Directory"
        volumes.append({"name": name, "hostPath": {"path": mount.host_path, "type": kind}})
        volume_mounts.append({"name": name, "mountPath": mount.mount_path, "readOnly": mount.read_only})
    # Root: the files it reads and writes are root's (0600 keys, 0700 data dirs).
    return pods.pod_manifest(
        pods.pod_name(f"dr-{purpose}", node), namespace, purpose=purpose, node=node, deadline=DEADLINE_SECONDS,
        labels=run.labels(), annotations=run.annotations(lease), volumes=volumes,
        securityContext={"runAsUser": 0, "runAsGroup": 0},
        containers=[{"name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", dead_man_script(ALIVE, pod_grace_seconds())],
                     "volumeMounts": volume_mounts}])


class HostPod:
    """File operations on the node through the pod; paths are the node's own (host) paths."""

    def __init__(self, kube: Kube, helper: pods.HelperPod, node: str, mounts: list[HostMount]) -> None:
        self.kube, self.helper, self.node, self.mounts = kube, helper, node, mounts

    @property
    def name(self) -> str:
        return self.helper.name

    def path(self, host_path: str, *, write: bool = False) -> str:
        """Where the pod sees a host path (through the deepest mount that holds it)."""
        clean = _norm(host_path)
        best: HostMount | None = None
        for mount in self.mounts:
            root = _norm(mount.host_path)
            if (clean == root or clean.startswith(root.rstrip("/") + "/")) and (
                    best is None or len(root) > len(_norm(best.host_path))):
                best = mount
        if best is None:
            raise DrError(f"internal error: {host_path} is not under a directory the pod on {self.node} mounts")
        if write and best.read_only:
            raise DrError(f"internal error: {host_path} is mounted read-only in the pod on {self.node}")
        return HOST_ROOT + clean

    # --- running commands ----------------------------------------------------------------------------
    def exec(self, command: list[str], *, stdin: bytes | None = None) -> tuple[ExecResult, bytes]:
        return run_in(self.kube, self.helper, CONTAINER, command, stdin=stdin)

    def sh(self, script: str, what: str, *, stdin: bytes | None = None) -> bytes:
        """Run a shell script in the pod; its stdout, or a DrError saying what failed on which node."""
        result, out = self.exec(["sh", "-c", script], stdin=stdin)
        if not result.ok:
            tail = result.stderr.decode(errors="replace").strip()[-1000:]
            raise DrError(f"{what} on node {self.node} failed: {result.describe()}" + (f": {tail}" if tail else ""))
        return out

    def touch(self) -> None:
        touch_pod(self.kube, self.helper.namespace, self.helper.name, CONTAINER, ALIVE)

    # --- files ---------------------------------------------------------------------------------------
    def stat(self, host_path: str) -> FileStat | None:
        """The entry itself (a symlink is not followed), or None when nothing is there."""
        p = shlex.quote(self.path(host_path))
        out = self.sh(f"if [ -e {p} ] || [ -L {p} ]; then stat -c '%a %u %g %s %F' {p}; fi",
                      f"stat {host_path}").decode(errors="replace").strip()
        if not out:
            return None
        mode, uid, gid, size, kind = out.split(" ", 4)
        return FileStat(kind, int(mode, 8), int(uid), int(gid), int(size))

    def exists(self, host_path: str) -> bool:
        return self.stat(host_path) is not None

    def digest(self, host_path: str) -> tuple[int, str]:
        p = shlex.quote(self.path(host_path))
        out = self.sh(f"wc -c < {p} && sha256sum {p}", f"checksum of {host_path}").decode(errors="replace")
        lines = out.strip().splitlines()
        match = _SHA256.match(lines[-1]) if len(lines) == 2 and lines[0].strip().isdigit() else None
        if match is None:
            raise VerificationError(f"the pod on node {self.node} printed an unexpected size or digest for "
                                    f"{host_path}: {out[:200]!r}",
                                    hint="The helper image needs sh, wc and sha256sum (busybox has them).")
        return int(lines[0].strip()), match.group(1)

    def read(self, host_path: str) -> bytes | None:
        """The whole file (None when it does not exist), checked against the pod's size and SHA-256."""
        st = self.stat(host_path)
        if st is None:
            return None
        if st.kind != "regular file":
            raise DrError(f"{host_path} on node {self.node} is a {st.kind}, not a regular file")
        size, sha = self.digest(host_path)
        result, data = self.exec(["cat", self.path(host_path)])
        result.check(f"reading {host_path} on node {self.node}")
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise VerificationError(f"reading {host_path} from node {self.node}: got {len(data)} bytes with SHA-256 "
                                    f"{hashlib.sha256(data).hexdigest()}, the pod has {size} bytes with {sha}")
        return data

    def write(self, host_path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        """Replace (or create) a file atomically, with this mode and owner, after checking what arrived."""
        target = self.path(host_path, write=True)
        directory, base = posixpath.split(target)
        tmp = posixpath.join(directory, f".kubectl-dr-{base}.{secrets.token_hex(4)}")
        q = shlex.quote
        self.sh(f"umask 077 && cat > {q(tmp)}", f"writing {host_path}", stdin=data)
        try:
            size, sha = self.digest(posixpath.join(posixpath.dirname(host_path), posixpath.basename(tmp)))
            if size != len(data) or sha != hashlib.sha256(data).hexdigest():
                raise VerificationError(f"writing {host_path} on node {self.node}: the pod received {size} of "
                                        f"{len(data)} bytes (SHA-256 {sha}); nothing was replaced")
            self.sh(f"chown {uid}:{gid} {q(tmp)} && chmod {mode:o} {q(tmp)} && mv -f {q(tmp)} {q(target)} && sync",
                    f"replacing {host_path}")
        except BaseException:
            self.exec(["rm", "-f", tmp])
            raise

    def rename(self, source: str, dest: str) -> None:
        """Rename on the node; refuses to replace anything at `dest`."""
        s, d = shlex.quote(self.path(source, write=True)), shlex.quote(self.path(dest, write=True))
        self.sh(f"if [ -e {d} ] || [ -L {d} ]; then echo '{dest} already exists' >&2; exit 17; fi; "
                f"mv {s} {d} && sync", f"renaming {source} to {dest}")

    def mkdir(self, host_path: str, mode: int = 0o700) -> None:
        p = shlex.quote(self.path(host_path, write=True))
        self.sh(f"mkdir -p {p} && chmod {mode:o} {p}", f"creating {host_path}")

    def remove(self, host_path: str) -> None:
        """Remove one file (never a directory tree)."""
        self.sh(f"rm -f {shlex.quote(self.path(host_path, write=True))}", f"removing {host_path}")


def start_host_pod(kube: Kube, *, console: Console, node: str, namespace: str, mounts: list[HostMount], image: str,
                   purpose: str, run: Run, heartbeat: Heartbeat, lease: str | None = None) -> HostPod:
    """Create the pod, wait until it runs (or say why it cannot), and keep it alive with the heartbeat.

    Its deletion is registered with the command's cleanup stack before anything else happens. Finished pods
    of the same purpose on the node (a killed run's, ended by their dead-man check) are deleted first: they
    hold nothing any more, and would otherwise stay listed as Completed."""
    _delete_finished(kube, namespace, node, purpose)
    doc = manifest(node, namespace, mounts, image=image, purpose=purpose, run=run, lease=lease)
    helper = start_pod(kube, doc, what=f"{purpose} (node {node})", console=console)
    pod = HostPod(kube, helper, node, mounts)
    beat = f"pod {helper.name}"
    heartbeat.add(beat, pod.touch)
    helper.on_delete.append(lambda: heartbeat.remove(beat))
    return pod


def _delete_finished(kube: Kube, namespace: str, node: str, purpose: str) -> None:
    selector = ",".join(f"{k}={v}" for k, v in pods.managed_labels(purpose).items())
    found = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector).get("items") or []
    for pod in found:
        phase = (pod.get("status") or {}).get("phase")
        if (pod.get("spec") or {}).get("nodeName") == node and phase in ("Succeeded", "Failed"):
            try:
                kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
