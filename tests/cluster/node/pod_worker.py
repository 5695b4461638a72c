"""One pod's life on a node: set up, init containers in order, containers, restarts, termination.

The worker owns the pod's processes and reports everything through ``status`` (the pod status a real
kubelet would write); the Kubelet pushes it to the Store after every change.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.node import containers as cspec
from tests.cluster.node import logs, sandbox, volumes
from tests.cluster.node.images import ImagePullError, ImageStore, normalized_name
from tests.cluster.node.logs import rfc3339nano

Json = dict[str, Any]
log = logging.getLogger("tests.cluster.node")


def now() -> str:
    return rfc3339nano()[:19] + "Z"


@dataclass
class ContainerRecord:
    name: str
    image: str
    init: bool
    restart_count: int = 0
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    image_id: str = ""
    container_id: str = ""
    process: sandbox.ContainerProcess | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return "running" in self.state and self.process is not None

    def status(self) -> Json:
        out: Json = {"name": self.name, "state": self.state, "lastState": self.last_state,
                     "ready": self.running and not self.init, "restartCount": self.restart_count,
                     "image": normalized_name(self.image), "imageID": self.image_id}
        if self.container_id:
            out["containerID"] = self.container_id
        out["started"] = self.running
        return out


class PodWorker:
    def __init__(self, pod: Json, *, pod_dir: Path, node_root: Path, images: ImageStore,
                 get: Callable[[str, str | None, str], Awaitable[Json]],
                 event: Callable[..., Awaitable[None]],  # (type, reason, message[, component])
                 changed: Callable[[], Awaitable[None]],
                 attach_blockers: Callable[[Json], Awaitable[list[tuple[str, list[str]]]]],
                 ca_file: Path | None, token_source: volumes.TokenSource | None,
                 pod_ip: str, backoff_base: float) -> None:
        self.pod = pod
        self.pod_dir = pod_dir
        self.node_root = node_root
        self.images = images
        self.get = get
        self.event = event
        self.changed = changed
        self.attach_blockers = attach_blockers
        self.ca_file = ca_file
        self.token_source = token_source
        self.pod_ip = pod_ip
        self.backoff_base = backoff_base
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.inits = [ContainerRecord(c["name"], c.get("image", ""), True)
                      for c in spec.get("initContainers") or []]
        self.mains = [ContainerRecord(c["name"], c.get("image", ""), False) for c in spec.get("containers") or []]
        for r in self.inits:
            r.state = {"waiting": {"reason": "PodInitializing"}}
        self.initialized = not self.inits
        self.sandbox_ready = False
        self.phase = "Pending"
        self.start_time = now()
        self.pod_sandbox: sandbox.PodSandbox | None = None
        self.volumes: dict[str, volumes.Volume] = {}
        self.task: asyncio.Task[None] | None = None
        self.supervisors: list[asyncio.Task[None]] = []
        self.terminating = False
        self.reason: str | None = None  # status.reason/message of a pod the kubelet failed itself
        self.message: str | None = None

    # ---------------------------------------------------------------------------------------- lookup
    def container_spec(self, name: str) -> Json | None:
        spec = self.pod.get("spec") or {}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if c["name"] == name:
                return dict(c)
        return None

    def record(self, name: str) -> ContainerRecord | None:
        return next((r for r in [*self.inits, *self.mains] if r.name == name), None)

    def log_path(self, name: str, previous: bool = False) -> Path:
        return self.pod_dir / "logs" / (f"{name}.previous.log" if previous else f"{name}.log")

    # ------------------------------------------------------------------------------------------- life
    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.changed()  # Pending, containers ContainerCreating, while volumes are set up
            await self._setup()
            for record in self.inits:
                if not await self._run_init(record):
                    await self.stop_sandbox()
                    return
            self.initialized = True
            await self.changed()
            self.supervisors = [asyncio.create_task(self._supervise(r)) for r in self.mains]
            await asyncio.gather(*self.supervisors)
            # Every container finished for good: the pod sandbox is torn down, as the kubelet does.
            await self.stop_sandbox()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s: worker failed", cspec.pod_ref(self.pod))

    async def _setup(self) -> None:
        meta = self.pod["metadata"]
        delay = 1.0
        while True:
            try:
                blockers = await self.attach_blockers(self.pod)
                if blockers:
                    for pv, names in blockers:
                        # The attach/detach controller reports it (reconciler.reportMultiAttachError).
                        await self.event("Warning", "FailedAttachVolume",
                                         f'Multi-Attach error for volume "{pv}" Volume is already used by '
                                         f"pod(s) {', '.join(names)}", "attachdetach-controller")
                    raise _Retry()
                ctx = volumes.VolumeContext(self.get, self.pod_dir, self.node_root, self.ca_file,
                                            self.token_source)
                self.volumes = await volumes.prepare(self.pod, ctx)
                break
            except volumes.VolumeError as e:
                await self.event("Warning", e.reason, e.message)
            except _Retry:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
        host_network = bool((self.pod.get("spec") or {}).get("hostNetwork"))
        holder = self.images.build("busybox")
        # A hostNetwork pod shares the node's UTS namespace too: its hostname is the node's name.
        hostname = str((self.pod.get("spec") or {}).get("nodeName") or meta["name"]) if host_network else meta["name"]
        self.pod_sandbox = await sandbox.PodSandbox.start(hostname, host_network, holder)
        (self.pod_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.sandbox_ready = True
        await self.changed()

    async def _run_init(self, record: ContainerRecord) -> bool:
        while True:
            code = await self._start_and_wait(record)
            if code == 0:
                return True
            if self.restart_policy == "Never":
                self.phase = "Failed"
                for r in self.mains:
                    r.state = {"waiting": {"reason": "PodInitializing"}}
                await self.changed()
                return False
            await self._backoff(record)

    async def _supervise(self, record: ContainerRecord) -> None:
        while True:
            code = await self._start_and_wait(record)
            restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)
            if not restart or self.terminating:
                self._update_phase()
                await self.changed()
                return
            await self._backoff(record)

    async def _backoff(self, record: ContainerRecord) -> None:
        # The kubelet's crash-loop back-off: base, doubling, capped at 5 minutes.
        delay = min(self.backoff_base * (2 ** max(record.restart_count - 1, 0)), 300.0)
        record.last_state = {"terminated": record.state.get("terminated", {})}
        pod_name = f"{self.pod['metadata']['name']}_{self.pod['metadata'].get('namespace', 'default')}"
        msg = (f"back-off {int(delay)}s restarting failed container={record.name} "
               f"pod={pod_name}({self.pod['metadata'].get('uid', '')})")
        record.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
        record.restart_count += 1
        await self.event("Warning", "BackOff",
                         f"Back-off restarting failed container {record.name} in pod {pod_name}"
                         f"({self.pod['metadata'].get('uid', '')})")
        await self.changed()
        await asyncio.sleep(delay)

    async def _pull(self, record: ContainerRecord) -> Any:
        attempts = 0
        while True:
            try:
                image = self.images.resolve(record.image)
                if (self.container_spec(record.name) or {}).get("imagePullPolicy") == "Always":
                    await self.event("Normal", "Pulling", f'Pulling image "{record.image}"')
                    await self.event("Normal", "Pulled", f'Successfully pulled image "{record.image}" in '
                                                         "1ms (1ms including waiting)")
                else:
                    await self.event("Normal", "Pulled",
                                     f'Container image "{record.image}" already present on machine')
                return image
            except ImagePullError as e:
                attempts += 1
                await self.event("Normal", "Pulling", f'Pulling image "{record.image}"')
                await self.event("Warning", "Failed", f'Failed to pull image "{record.image}": {e}')
                await self.event("Warning", "Failed", "Error: ErrImagePull")
                record.state = {"waiting": {"reason": "ErrImagePull", "message": str(e)}}
                await self.changed()
                await asyncio.sleep(min(self.backoff_base, 2.0))
                msg = f'Back-off pulling image "{record.image}"'
                record.state = {"waiting": {"reason": "ImagePullBackOff", "message": msg}}
                await self.event("Normal", "BackOff", msg)
                await self.event("Warning", "Failed", "Error: ImagePullBackOff")
                await self.changed()
                await asyncio.sleep(min(self.backoff_base * 2 ** attempts, 300.0))

    async def _start_and_wait(self, record: ContainerRecord) -> int:
        assert self.pod_sandbox is not None
        spec = self.container_spec(record.name) or {}
        image = await self._pull(record)
        record.image_id = image.image_id
        while True:
            try:
                creds = cspec.credentials(self.pod, spec)
                env = await cspec.environment(self.pod, spec, image, self.get)
                break
            except cspec.ContainerConfigError as e:
                record.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                await self.event("Warning", "Failed", f"Error: {e}")
                await self.changed()
                await asyncio.sleep(max(self.backoff_base, 1.0))
        sc = spec.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        launch = sandbox.ContainerLaunch(
            name=record.name, image_rootfs=image.rootfs,
            rootfs=self.pod_dir / "rootfs" / record.name,
            argv=cspec.argv(spec, image, env), env=env, workdir=spec.get("workingDir") or "/",
            mounts=volumes.container_mounts(self.pod, spec, self.volumes), creds=creds,
            read_only_root=bool(sc.get("readOnlyRootFilesystem")), privileged=bool(sc.get("privileged")),
            cap_add=caps.get("add") or (), cap_drop=caps.get("drop") or (), stdin=bool(spec.get("stdin")))
        await sandbox.prepare_rootfs(launch.image_rootfs, launch.rootfs, launch.mounts)
        current = self.log_path(record.name)
        if current.exists():
            current.replace(self.log_path(record.name, previous=True))
        logfile = open(current, "ab")  # noqa: SIM115 - closed when the process's output ends
        record.container_id = "containerd://" + hashlib.sha256(
            f"{self.pod['metadata'].get('uid')}/{record.name}/{record.restart_count}".encode()).hexdigest()
        await self.event("Normal", "Created", f"Created container: {record.name}")
        proc = await sandbox.start_container(launch, self.pod_sandbox, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
        assert proc.proc.stdout is not None and proc.proc.stderr is not None
        record.pumps = [asyncio.create_task(logs.pump(proc.proc.stdout, "stdout", logfile)),
                        asyncio.create_task(logs.pump(proc.proc.stderr, "stderr", logfile))]
        record.process = proc
        started = now()
        record.state = {"running": {"startedAt": started}}
        await self.event("Normal", "Started", f"Started container {record.name}")
        self._update_phase()
        await self.changed()
        code = await proc.wait()
        await asyncio.gather(*record.pumps, return_exceptions=True)
        logfile.close()
        record.process = None
        term: Json = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": started, "finishedAt": now(), "containerID": record.container_id}
        record.state = {"terminated": term}
        self._update_phase()
        await self.changed()
        return code

    def _update_phase(self) -> None:
        if self.phase in ("Succeeded", "Failed") or not self.initialized:
            return
        if any(r.running for r in self.mains):
            self.phase = "Running"
            return
        done = [r.state.get("terminated") for r in self.mains]
        if all(done) and self.mains and all(t is not None for t in done):
            codes = [t["exitCode"] for t in done if t is not None]
            if self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and not any(codes)):
                self.phase = "Succeeded" if not any(codes) else "Failed"

    # ------------------------------------------------------------------------------------ termination
    async def terminate(self, grace: float) -> None:
        """SIGTERM every running container, SIGKILL after ``grace`` seconds, then tear down the pod."""
        self.terminating = True
        if self.task is not None:
            self.task.cancel()
        for t in self.supervisors:
            t.cancel()
        running = [r for r in [*self.inits, *self.mains] if r.process is not None]
        for r in running:
            await self.event("Normal", "Killing", f"Stopping container {r.name}")
            assert r.process is not None
            r.process.signal(15)
        waits = [asyncio.create_task(r.process.wait()) for r in running if r.process is not None]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(grace, 0))
            if pending:
                for r in running:
                    if r.process is not None:
                        r.process.kill()
                await asyncio.wait(pending, timeout=10)
        for r, w in zip(running, waits, strict=True):
            code = w.result() if w.done() and not w.cancelled() else 137
            await asyncio.gather(*r.pumps, return_exceptions=True)
            started = r.state.get("running", {}).get("startedAt", now())
            r.state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                      "startedAt": started, "finishedAt": now(),
                                      "containerID": r.container_id}}
            r.process = None
        await self.stop_sandbox()

    async def fail(self, reason: str, message: str, grace: float) -> None:
        """The kubelet ends the pod itself (active deadline): phase Failed with reason and message, every
        container killed as on deletion (SIGTERM, SIGKILL after the grace period)."""
        self.phase = "Failed"
        self.reason, self.message = reason, message
        await self.changed()
        await self.terminate(grace)
        for r in [*self.inits, *self.mains]:
            if "terminated" not in r.state:
                # Never started (or waiting to restart): the kubelet reports it terminated without a run.
                r.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                          "message": "The container could not be located when the pod was "
                                                     "terminated", "startedAt": None, "finishedAt": now()}}
        await self.changed()

    async def stop_sandbox(self) -> None:
        if self.pod_sandbox is not None:
            await self.pod_sandbox.stop()
            self.pod_sandbox = None

    def cleanup(self) -> None:
        shutil.rmtree(self.pod_dir, ignore_errors=True)

    # ----------------------------------------------------------------------------------------- status
    def status(self, previous: Json) -> Json:
        ts = now()
        old = {c["type"]: c for c in previous.get("conditions") or []}

        def cond(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> Json:
            status = "True" if ok else "False"
            prior = old.get(kind)
            c: Json = {"type": kind, "status": status, "lastProbeTime": None,
                       "lastTransitionTime": prior["lastTransitionTime"]
                       if prior and prior.get("status") == status else ts}
            if reason and not ok:
                c["reason"] = reason
                if message:
                    c["message"] = message
            return c

        all_ready = bool(self.mains) and all(r.running for r in self.mains)
        completed = self.phase in ("Succeeded", "Failed")
        not_ready = "PodCompleted" if completed else "ContainersNotReady"
        # The kubelet's GeneratePodReadyCondition: which containers are not ready.
        unready = "" if completed else "containers with unready status: [" + " ".join(
            r.name for r in self.mains if not r.running) + "]"
        uninitialized = "" if completed else "containers with incomplete status: [" + " ".join(
            r.name for r in self.inits if "terminated" not in r.state
            or r.state["terminated"].get("exitCode") != 0) + "]"
        conditions = [
            cond("PodReadyToStartContainers", self.sandbox_ready and not completed),
            cond("Initialized", self.initialized, "PodCompleted" if completed else "ContainersNotInitialized",
                 uninitialized),
            cond("Ready", all_ready, not_ready, unready),
            cond("ContainersReady", all_ready, not_ready, unready),
        ]
        if "PodScheduled" in old:
            conditions.append(old["PodScheduled"])
        host_network = bool((self.pod.get("spec") or {}).get("hostNetwork"))
        status: Json = {"phase": self.phase, "conditions": conditions, "hostIP": "127.0.0.1",
                        "hostIPs": [{"ip": "127.0.0.1"}], "startTime": previous.get("startTime", self.start_time),
                        "qosClass": previous.get("qosClass", "BestEffort")}
        if self.sandbox_ready:
            ip = "127.0.0.1" if host_network else self.pod_ip
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        if self.inits:
            status["initContainerStatuses"] = [r.status() for r in self.inits]
        status["containerStatuses"] = [r.status() for r in self.mains]
        return status


class _Retry(Exception):
    pass

