"""One member's snapshot pod, exposed as the volumes' Exposure exposes a claim: found, held, started, served and
always cleaned up.

- Before: no snapshot while a restore holds its lease; snapshot pods of runs that are gone are deleted (each
  holds a copy of every Secret), in the background while this run's pod starts.
- Held: the member's Lease (two snapshots never run on one member), renewed by a heartbeat that also keeps the
  pod's dead-man file fresh; a killed run's pod removes its snapshot and ends by itself.
- Started: one pod saves the snapshot (etcdctl in the member's own image) and, first, copies the API server's
  encryption config beside it, so the manifest's fingerprint needs no second pod. A pod that cannot start says
  why in etcd's terms (podrun.explain). The pod counts as started once its serve container runs: the save
  goes on beside it.
- Served: one exec streams the file while etcdctl writes it, a second reader in the pod hashing it (size and
  SHA-256 of the final file on stderr), while the pod's status is watched for etcdctl's exit code
  (snapshot_follow.py); only a save that ended with 0 is kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.etcd import encryption, podrun, podspec
from kubectl_dr.etcd.errors import EtcdError, MemberError
from kubectl_dr.etcd.etcdctl import parse_endpoint_status
from kubectl_dr.etcd.model import EndpointInfo
from kubectl_dr.etcd.snapshot_follow import SaveWatch, follow_script, job_exit_codes
from kubectl_dr.etcd.topology import StaticMember
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult, Timeouts, open_exec
from kubectl_dr.kube.pods import HelperPod
from kubectl_dr.runs import Heartbeat, Lease, LeaseHeld, Run, lease_name
from kubectl_dr.runs.heartbeat import touch_pod
from kubectl_dr.runs.run import COMMAND_ANNOTATION, LEASE_ANNOTATION, RUN_ID_LABEL, Holder

# After the snapshot's last byte, etcdctl has only to exit; its status must show that within this time.
SAVE_END_TIMEOUT = 60.0
# `etcdctl endpoint status` with its dial and command timeouts (etcdctl.py) ends well within this.
STATUS_TIMEOUT = 30.0
# The lease every etcd restore holds (restore/common.py takes it under this name).
RESTORE_LEASE = lease_name("etcd", "restore")
_SHA256 = re.compile(r"^([0-9a-f]{64})\s")
_SIZE = re.compile(r"^([0-9]+)$")
# The file on stdout; its size first and its SHA-256 (computed beside the stream, on another core) on stderr.
# The exit status is cat's and sha256sum's together.
SERVE_SCRIPT = ("f={file}; wc -c < $f >&2 || exit 1; sha256sum $f >&2 & h=$!; cat $f || {{ kill $h; exit 1; }}; "
          "wait $h")


@dataclass
class Served:
    """What one stream of the snapshot brought: the remote command's end and the pod's size and digest."""

    result: ExecResult
    remote_size: int | None
    remote_sha256: str | None


@dataclass
class SnapshotExposure:
    kube: Kube
    member: StaticMember
    namespace: str
    run: Run
    helper_image: str
    console: Console
    timings: dict[str, float] = field(default_factory=dict)  # where the fixed seconds go (into the manifest)
    pod: HelperPod | None = None
    lease: Lease | None = None
    heartbeat: Heartbeat | None = None
    _steps: list[cleanup.UndoStep] = field(default_factory=list)
    _config: str | encryption.Fingerprint | None = None
    # Set when the copy fails or is interrupted: a read still waiting in a thread (the member's status) ends at
    # once, so the pod, which holds every Secret of the cluster, is deleted without waiting out its timeout.
    stopping: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> SnapshotExposure:
        stack = cleanup.current()
        with self._timed("lease"):
            self.lease = Lease(self.kube, self.namespace, lease_name("etcd", self.member.name), self.run,
                               what=f"etcd member {self.member.name}")
            try:
                self.lease.acquire()
            except LeaseHeld as exc:
                raise MemberError(self.member.node, exc.message, hint=exc.hint) from None
        self._steps.append(stack.push(f"release the lease on etcd member {self.member.name}", self.lease.release))
        self.heartbeat = Heartbeat(self.console.warn)
        self._steps.append(stack.push("stop the heartbeat", self.heartbeat.stop))
        self.heartbeat.hold(self.lease)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stack = cleanup.current()
        try:
            if self.pod is not None:
                with self._timed("pod deletion"):
                    self.pod.delete(wait=True)
        finally:
            for step in reversed(self._steps):
                stack.run(step)
            self._steps.clear()

    def _timed(self, what: str) -> _Timer:
        return _Timer(self.timings, what)

    # --- start --------------------------------------------------------------------------------------------
    def start(self) -> HelperPod:
        """The pod runs its serve container while the snapshot is being saved beside it (etcdctl in the member's
        image); its init container has copied the encryption config first."""
        assert self.heartbeat is not None and self.lease is not None
        with self._timed("encryption config lookup"):
            config = encryption.config_path(self.kube, self.member.node)
        self._config = config
        manifest = podspec.snapshot_pod(self.member, self.namespace, self.helper_image, self.run, self.lease.name,
                                        encryption_config=config if isinstance(config, str) else None)
        with self._timed("pod start"):
            self.pod = podrun.start(self.kube, manifest, self.member, "etcd snapshot", console=self.console,
                                    helper_image=self.helper_image, may_finish=podspec.SNAPSHOT_JOBS)
        pod = self.pod
        self.heartbeat.add(f"pod {pod.name}", lambda: touch_pod(self.kube, pod.namespace, pod.name,
                                                                podspec.SERVE_CONTAINER, podspec.ALIVE))
        pod.on_delete.append(lambda: self.heartbeat.remove(f"pod {pod.name}") if self.heartbeat else None)
        return pod

    def member_status(self) -> dict[str, Any]:
        """What the member-status container printed: ID, version, revision, database size (best effort: logs
        only), once it has ended. It runs beside the save and usually ends before the serve container runs; its
        exit code is checked with the save's after the stream (`SaveWatch.wait_ended`)."""
        assert self.pod is not None
        m = self.member
        info: dict[str, Any] = {"name": m.name, "node": m.node, "endpoint": m.client_url, "image": m.image,
                                "version": image_version(m.image)}
        with self._timed("member status"):
            pause, deadline = 0.02, time.monotonic() + STATUS_TIMEOUT
            while job_exit_codes(self.pod.get())[podspec.MEMBER_STATUS_CONTAINER] is None:
                if time.monotonic() > deadline or self.stopping.is_set():
                    return info  # the manifest goes without; the check after the stream decides
                self.stopping.wait(pause)
                pause = min(pause * 2, 0.25)
            logs = self.pod.logs(podspec.MEMBER_STATUS_CONTAINER, tail_lines=50)
        for line in reversed(logs.splitlines()):
            if line.startswith("["):
                try:
                    rows = parse_endpoint_status(line)
                except ValueError:
                    break
                if rows:
                    info.update(endpoint_fields(rows[0]))
                    info["clusterID"] = _cluster_id(line)
                break
        return info

    def fingerprint(self) -> encryption.Fingerprint:
        """The encryption-at-rest fingerprint from the copy the pod made before the snapshot; a failure to read is
        recorded (and said), not fatal to the snapshot."""
        config = self._config
        assert config is not None, "start() first"
        if isinstance(config, encryption.Fingerprint):
            return config
        node = self.member.node
        try:
            with self._timed("encryption config read (beside the stream)"):
                data = self._read(podspec.ENCRYPTION_COPY, config)
            return encryption.fingerprint_config(data, node=node, path=config)
        except DrError as exc:
            self.console.warn(f"cannot fingerprint the encryption-at-rest config on node {node}: {exc.message}; the "
                    "snapshot records it as unknown")
            return encryption.Fingerprint("unknown", "", node, reason=exc.message)

    def _read(self, path: str, host_path: str) -> bytes:
        """A small file from the serve container, checked against the size and SHA-256 the pod computed."""
        assert self.pod is not None
        out = bytearray()
        script = f"[ -e {path} ] || {{ cat {path}.error >&2; exit 3; }}; " + SERVE_SCRIPT.format(file=path)
        result = open_exec(self.kube, self.pod.namespace, self.pod.name, ["sh", "-c", script],
                           container=podspec.SERVE_CONTAINER).run(stdout=out.extend)
        if result.exit_code == 3:
            raise EtcdError(f"{host_path} could not be read on the node: "
                            f"{result.stderr.decode(errors='replace').strip()[:300] or 'no such file'}")
        served = parse_served(result)
        data = bytes(out)
        compare(self.member.node, served, len(data), hashlib.sha256(data).hexdigest(), host_path)
        return data

    # --- serve --------------------------------------------------------------------------------------------
    def stream(self, write: Callable[[bytes], None]) -> Served:
        """The snapshot file, written as it arrives while etcdctl saves it; the pod hashes the final file beside
        the stream. Returns only once etcdctl (and the member status) ended with 0: a save that failed, midway
        or before its first byte, raises a MemberError in etcdctl's words and nothing is kept."""
        assert self.pod is not None
        pod = self.pod
        with self._timed("stream while etcdctl saves"):
            stream = open_exec(self.kube, pod.namespace, pod.name,
                               ["sh", "-c", follow_script(podspec.SNAPSHOT_FILE, podspec.ENDED)],
                               container=podspec.SERVE_CONTAINER, timeouts=Timeouts())
            with SaveWatch(pod, self.member, self.helper_image, on_failure=stream.close) as watch:
                try:
                    result = stream.run(stdout=write)
                except DrError:
                    watch.stop()
                    if watch.failure is not None:
                        raise watch.failure from None
                    raise
        with self._timed("etcdctl exit status"):
            if result.ok:
                watch.wait_ended(SAVE_END_TIMEOUT)
            else:
                # The pod may have seen the save fail (the part file removed): etcdctl's own words are the better
                # reason then. Otherwise the stream's failure is the error (compare() raises it).
                try:
                    watch.wait_ended(10.0)
                except MemberError as exc:
                    if exc is watch.failure:
                        raise
        return parse_served(result)


class _Timer:
    def __init__(self, timings: dict[str, float], what: str) -> None:
        self.timings, self.what = timings, what

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.what] = round(self.timings.get(self.what, 0.0) + time.monotonic() - self.started, 3)


def parse_served(result: ExecResult) -> Served:
    size = sha = None
    for line in result.stderr.decode(errors="replace").splitlines():
        if size is None and (m := _SIZE.match(line.strip())):
            size = int(m.group(1))
        elif sha is None and (h := _SHA256.match(line + " ")):
            sha = h.group(1)
    return Served(result, size, sha)


def compare(where: str, served: Served, size: int, sha: str, what: str = "the snapshot") -> None:
    """The remote command succeeded and what arrived is what the pod has. busybox `wc -c` counts in 32 bits:
    past 4 GiB only the low bits are comparable; the SHA-256 of the whole file is the proof either way."""
    served.result.check(f"streaming {what} from node {where}")
    if served.remote_size is None or served.remote_sha256 is None:
        raise VerificationError(f"the helper container on node {where} printed no size and digest for {what}: "
                                f"{served.result.stderr[:200]!r}",
                                hint="--helper-image needs sh, sha256sum, wc, cat, stat, mkfifo and sleep (busybox or "
                                     "coreutils).")
    if size % 2**32 != served.remote_size % 2**32:
        raise VerificationError(f"{what} transfer from {where} is incomplete: received {size} of "
                                f"{served.remote_size} bytes")
    if sha != served.remote_sha256:
        raise VerificationError(f"{what} transfer from {where} is damaged: SHA-256 {sha} here, "
                                f"{served.remote_sha256} in the pod")


def image_version(image: str) -> str | None:
    """registry.k8s.io/etcd:3.5.15-0 → 3.5.15 (kubeadm's tags are VERSION-N)."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = re.match(r"v?(\d+\.\d+\.\d+)", tag)
    return match.group(1) if match else None


def endpoint_fields(row: EndpointInfo) -> dict[str, Any]:
    fields = {"id": row.member_id, "version": row.version, "revisionBefore": row.revision, "dbSize": row.db_size,
              "dbSizeInUse": row.db_size_in_use, "isLeader": row.is_leader, "raftTerm": row.raft_term}
    return {k: v for k, v in fields.items() if v is not None}


def _cluster_id(line: str) -> str | None:
    try:
        return f"{int(json.loads(line)[0]['Status']['header']['cluster_id']):x}"
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def sweep_in_background(kube: Kube, namespace: str, names: list[str], console: Console,
                        ) -> threading.Thread | None:
    """Delete the snapshot pods of runs that are gone while this run's pod starts (they are other pods); the
    caller joins the thread before it ends."""
    if not names:
        return None

    def sweep() -> None:
        for name in names:
            console.say(f"deleting etcd snapshot pod {namespace}/{name} left behind by a run that is gone "
                    "(it holds a copy of every Secret of the cluster)")
            try:
                pods.HelperPod(kube, namespace, name).delete(wait=True)
            except DrError as exc:
                console.warn(f"cannot delete pod {namespace}/{name}: {exc.message}")

    thread = threading.Thread(target=sweep, name="sweep snapshot pods", daemon=True)
    thread.start()
    return thread


def refuse_during_restore(kube: Kube, namespace: str, run: Run) -> None:
    """No snapshot while a restore holds its lease: it would capture the data the restore is replacing (or half
    of it), and become the newest backup that `--from latest` picks next."""
    lease = Lease(kube, namespace, RESTORE_LEASE, run, what="the etcd restore")
    obj = lease.read()
    if obj is None or lease.expired(obj):
        return
    who = Holder.parse(str((obj.get("spec") or {}).get("holderIdentity") or ""))
    command = ((obj.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
    raise EtcdError(f"an etcd restore is running: run {who.run_id or '(unknown)'} on host {who.host} "
                    f"(pid {who.pid}){f' ({command})' if command else ''} holds the lease {namespace}/{lease.name}; "
                    "a snapshot now would save the data it is replacing",
                    hint="See its state with `kubectl dr etcd restore status`, and take the snapshot once it has "
                         "finished. Nothing was changed.")


def dead_snapshot_pods(kube: Kube, namespace: str, run: Run) -> list[str]:
    """Snapshot pods of runs whose lease is gone (killed runs): they still hold a full snapshot."""
    data = kube.get(f"/api/v1/namespaces/{namespace}/pods",
                    labelSelector=f"{pods.LABEL_MANAGED}={pods.MANAGED_BY},{pods.LABEL_PURPOSE}=etcd-snapshot")
    dead = []
    for pod in data.get("items") or []:
        meta = pod.get("metadata") or {}
        run_id = (meta.get("labels") or {}).get(RUN_ID_LABEL)
        lease_of = (meta.get("annotations") or {}).get(LEASE_ANNOTATION)
        if run_id == run.id:
            continue
        if lease_of:
            lease = Lease(kube, namespace, lease_of, run, what=lease_of)
            obj = lease.read()
            if obj is not None and not lease.expired(obj) and Holder.parse(
                    str((obj.get("spec") or {}).get("holderIdentity") or "")).run_id == run_id:
                continue  # a live run's pod
        dead.append(str(meta.get("name")))
    return sorted(dead)
