"""Carrying out an access plan: lease, leftovers, consumers, rescue pod — and always cleaning up.

`with Exposure(...) as exposure:` takes the claim's Lease first (a second run refuses, naming the
holder; nothing has changed yet), removes the pods of runs that are gone (only those whose lease
expired: a live run's pod is never touched), and registers the undo of everything it does with the
command's cleanup stack, which unwinds newest first however the command ends: pods deleted,
consumers scaled back, heartbeat stopped, lease released last.

A restore calls `mark_torn()` before it writes the first byte. From then on a failure or a signal
leaves the consumers stopped (their replica records stay on the workloads): a half-written volume is
never handed to the app. The error then says how to go on — the exact command that finishes the restore,
or `kubectl dr scale restore` to start the app on the partial data.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, Interrupted, VerificationError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.runs import Heartbeat, Lease, Run, lease_name
from kubectl_dr.session import Session
from kubectl_dr.volumes import rescue_pod, scripts
from kubectl_dr.volumes.access import AccessPlan
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod, own_pods
from kubectl_dr.workloads import ScaleRecord, scale_down
from kubectl_dr.workloads.scaling import restore_hint


def claim_lease(kube: Kube, access: AccessPlan, run: Run, dry_run: str = "none") -> Lease:
    claim = access.claim
    return Lease(kube, claim.namespace, lease_name("pvc", claim.name), run,
                 what=f"claim {claim.namespace}/{claim.name}", dry_run=dry_run)


@dataclass
class Exposure:
    session: Session
    access: AccessPlan
    image: str
    purpose: str
    lease: Lease | None = None
    heartbeat: Heartbeat | None = None
    stopped: ScaleRecord | None = None
    pods: list[RescuePod] = field(default_factory=list)
    torn: bool = False
    rerun: str = ""  # the command that finishes a torn restore, as the user can paste it
    removed_leftovers: list[str] = field(default_factory=list)
    _steps: list[cleanup.UndoStep] = field(default_factory=list)

    @property
    def kube(self) -> Kube:
        return self.session.kube

    @property
    def run(self) -> Run:
        return self.session.run

    @property
    def console(self) -> Console:
        return self.session.console

    @property
    def dry_run(self) -> str:
        return self.session.dry_run

    @property
    def namespace(self) -> str:
        return self.access.claim.namespace

    @property
    def claim(self) -> str:
        return self.access.claim.name

    def __enter__(self) -> Exposure:
        stack = cleanup.current()
        self.lease = claim_lease(self.kube, self.access, self.run, self.dry_run)
        self.lease.acquire()
        if self.lease.held:
            self._steps.append(stack.push(f"release the lease on claim {self.namespace}/{self.claim}",
                                          self.lease.release))
        self.heartbeat = Heartbeat(self.console.warn)
        self._steps.append(stack.push("stop the heartbeat", self.heartbeat.stop))
        if self.lease.held:
            self.heartbeat.hold(self.lease)
        if self.dry_run == "none":
            self._remove_leftovers()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            # Done: heartbeat and lease go now, quietly. After an error the command's cleanup stack does it,
            # after the pods and the consumers, and says so.
            for step in reversed(self._steps):
                cleanup.current().run(step)
            return
        if not self.torn:
            return
        note = (f"The volume of {self.namespace}/{self.claim} is partly restored, so its consumers stay stopped "
                f"(their replicas are recorded on them). To finish the restore, run it again:\n  {self.rerun}\n"
                f"or `kubectl dr scale restore -n {self.namespace}` to start them on the partial data.")
        if isinstance(exc, (DrError, Interrupted)):
            exc.hint = f"{exc.hint}\n{note}" if exc.hint else note
        else:
            self.console.warn(note)

    # --- leftovers -----------------------------------------------------------------------------------
    def _remove_leftovers(self) -> None:
        """Pods of earlier runs on this claim: their runs are gone (we hold the lease they would need)."""
        assert self.lease is not None
        previous = self.lease.previous
        for pod in own_pods(self.kube, self.namespace, self.claim):
            if pod.run_id == self.run.id:
                continue
            if previous is not None and pod.run_id == previous.run_id:
                whose = f"run {previous.run_id} on host {previous.host}, whose lease expired"
            else:
                whose = "an earlier run that is no longer running"
            self.console.say(f"deleting pod {self.namespace}/{pod.name} left behind by {whose}")
            pods.HelperPod(self.kube, self.namespace, pod.name).delete(wait=True)
            self.removed_leftovers.append(pod.name)
        self._mention_others()

    def _mention_others(self) -> None:
        """kubectl dr pods of dead runs elsewhere in the namespace: said, not touched (not our claim)."""
        live: dict[str, bool] = {}
        for pod in own_pods(self.kube, self.namespace):
            if pod.run_id == self.run.id or pod.phase not in ("Pending", "Running") or not pod.lease:
                continue
            if pod.lease not in live:
                lease = Lease(self.kube, self.namespace, pod.lease, self.run, what=pod.lease)
                obj = lease.read()
                live[pod.lease] = obj is not None and not lease.expired(obj) and _holder_run(obj) == pod.run_id
            if not live[pod.lease]:
                self.console.say(f"note: pod {self.namespace}/{pod.name} of an earlier run (run {pod.run_id}) is "
                                 f"still running; it ends by itself within minutes, or: kubectl delete pod -n "
                                 f"{self.namespace} {pod.name}")

    # --- consumers -----------------------------------------------------------------------------------
    def stop_consumers(self) -> None:
        consumers = self.access.consumers
        if not consumers:
            return
        server = self.dry_run == "server"
        if not server:
            self.console.say(f"stopping {', '.join(c.ref for c in consumers)} ({self.access.why_stop})")
        self.stopped = scale_down(self.kube, consumers, run_id=self.run.id,
                                  reason=f"kubectl dr {self.run.command}", timeout=300.0,
                                  console=self.console, dry_run=server)

    def restart_consumers(self) -> None:
        if self.stopped is not None and self.stopped.workloads and self.dry_run == "none":
            self.console.say("starting the consumers again")
            self.stopped.restore()
        self.stopped = None

    def mark_torn(self, rerun: str) -> None:
        """The first byte is about to be written: from here on, failures keep the consumers stopped, and the
        error names ``rerun``, the command that finishes the restore."""
        self.torn, self.rerun = True, rerun
        if self.stopped is not None:
            self.stopped.keep()

    # --- the pod -------------------------------------------------------------------------------------
    def start(self, *, read_only: bool, meanwhile: str = "",
              beside_probe: Callable[[RescuePod], None] | None = None) -> RescuePod | None:
        """The rescue pod, running, probed for its tools, with a heartbeat; None on a server dry run.

        `beside_probe(pod)` runs while the tools are probed (two execs at once, one round trip saved): work
        that needs no tools but `find` and `stat` (the listing). If it fails, a failed probe is the error
        told (its message names what the image lacks)."""
        plan = self.access
        where = f" on node {plan.node}" if plan.node else ""
        if plan.claim.pending:
            where = " (its first consumer: the scheduler picks the node and the claim is bound)"
        mode = "read-only" if read_only else "read-write"
        if self.dry_run == "none":
            self.console.say(f"starting rescue pod for {self.namespace}/{self.claim}{where}, volume mounted "
                             f"{mode}{meanwhile}")
        security = plan.security
        if read_only != plan.read_only:
            from kubectl_dr.volumes.security import namespace_level
            from kubectl_dr.volumes.security import plan as security_plan

            security = security_plan(namespace_level(self.kube, self.namespace), plan.security.identity,
                                     write=not read_only)
        assert self.lease is not None
        pod = rescue_pod.start(self.kube, plan.claim, image=self.image, purpose=self.purpose, read_only=read_only,
                               node=plan.node, security=security, run=self.run, lease=self.lease.name,
                               console=self.console, dry_run=self.dry_run)
        if pod is None:
            return None
        assert self.heartbeat is not None
        heartbeat = self.heartbeat
        heartbeat.add(f"pod {pod.name}", pod.touch)
        pod.helper.on_delete.append(lambda: heartbeat.remove(f"pod {pod.name}"))
        self.pods.append(pod)
        if beside_probe is None:
            pod.tools = probe(self.kube, pod)
            return pod
        with ThreadPoolExecutor(1, "probe") as pool:
            probing = pool.submit(probe, self.kube, pod)
            # A failed probe is the error told over a listing that failed beside it. A Ctrl-C is not caught
            # here: it stays what ends the run (the pool's exit still waits for the probe's exec to end).
            try:
                beside_probe(pod)
            except Exception:
                probing.result()  # raises the probe's error, if it failed, instead
                raise
            pod.tools = probing.result()
        return pod

    def finish(self) -> None:
        """The job is done: pods deleted, consumers started again, the volume whole."""
        for pod in self.pods:
            pod.delete()
        self.pods.clear()
        self.torn = False
        self.restart_consumers()


def probe(kube: Kube, pod: RescuePod) -> scripts.Probe:
    from kubectl_dr.volumes.transfer import capture

    out, _ = capture(kube, pod, scripts.PROBE, what="tool probe")
    return scripts.parse_probe(out)


def _holder_run(obj: dict[str, Any]) -> str:
    from kubectl_dr.runs.run import Holder

    return Holder.parse(str((obj.get("spec") or {}).get("holderIdentity") or "")).run_id


def say_plan(console: Console, access: AccessPlan) -> None:
    for note in access.notes:
        console.say(f"note: {note}")


__all__ = ["CONTAINER", "Exposure", "VerificationError", "claim_lease", "probe", "restore_hint", "say_plan"]
