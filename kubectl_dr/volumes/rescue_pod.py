"""The rescue pod: mounts only the claim (and a scratch emptyDir), no token, no links, ends on its own.

It is a plain busybox (or `--image`) container whose main process is a dead-man loop: the run that made
the pod touches a heartbeat file through exec every few seconds (`runs.Heartbeat`), and the loop ends
the pod once the file is older than `pod_grace_seconds()` (3 minutes) — a run killed with SIGKILL, or cut off from the
cluster, leaves no pod holding the volume for longer than a few minutes. `activeDeadlineSeconds` bounds
the pod's life even if its image had no working `date` or `stat`. The data moves over exec streams, so
the pod needs no network access, no service account and nothing from the cluster but the volume.

Placement follows the claim: a ReadWriteOnce claim still in use is read on its consumer's node (where
the volume is attached) so a backup does not stop the app; a claim waiting for its first consumer
(WaitForFirstConsumer) gets a pod without a node, so the scheduler picks one and binds the claim, as it
would for the app.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from kubectl_dr import volumes
from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.runs import Run
from kubectl_dr.runs.heartbeat import dead_man_script, pod_grace_seconds, touch_pod
from kubectl_dr.runs.run import LEASE_ANNOTATION, RUN_ID_LABEL
from kubectl_dr.volumes.claims import Claim, node_ready
from kubectl_dr.volumes.scripts import DATA, SCRATCH, Probe
from kubectl_dr.volumes.security import UNKNOWN, SecurityPlan, replan
from kubectl_dr.workloads.specs import pod_uses_claim

DEFAULT_IMAGE = volumes.DEFAULT_IMAGE
CONTAINER = "rescue"
ALIVE = f"{SCRATCH}/.kubectl-dr-alive"
OWN_SELECTOR = f"{pods.LABEL_MANAGED}={pods.MANAGED_BY}"
# The outer bound of a rescue pod's life: a day covers a multi-terabyte transfer; the dead-man loop
# ends it within minutes of its run going away.
ACTIVE_DEADLINE_SECONDS = 24 * 3600


@dataclass
class RescuePod:
    helper: pods.HelperPod
    node: str | None
    image: str
    security: SecurityPlan
    read_only: bool
    tools: Probe | None = None  # what the image offers (tar flavour, fallocate), asked once it runs

    @property
    def name(self) -> str:
        return self.helper.name

    @property
    def namespace(self) -> str:
        return self.helper.namespace

    def delete(self) -> None:
        self.helper.delete(wait=True)

    def release(self) -> None:
        """Nothing more runs in the pod: let it terminate while we finish; `delete()` waits for it.

        Best effort: a failure here must not cost the work already done; `delete()` asks again and
        reports what goes wrong.
        """
        with contextlib.suppress(DrError):
            self.helper.request_delete()

    def touch(self) -> None:
        """The heartbeat that keeps the pod's dead-man loop from ending it."""
        touch_pod(self.helper.kube, self.namespace, self.name, CONTAINER, ALIVE)


def manifest(claim: Claim, name: str, *, image: str, purpose: str, read_only: bool, node: str | None,
             security: SecurityPlan, run: Run, lease: str) -> dict[str, Any]:
    # Pinned to `node` (tolerating every taint), it skips the scheduler and can share a control-plane node too.
    return pods.pod_manifest(
        name, claim.namespace, purpose=purpose, node=node or None, deadline=ACTIVE_DEADLINE_SECONDS,
        labels={**run.labels(), "kubectl-dr.io/pvc": claim.name[:63]},
        annotations={"kubectl-dr.io/claim": claim.name, **run.annotations(lease)},
        securityContext=security.pod,
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": claim.name, "readOnly": read_only}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
        containers=[{
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", dead_man_script(ALIVE, pod_grace_seconds())],
            "workingDir": DATA,
            "securityContext": security.container,
            "volumeMounts": [
                {"name": "data", "mountPath": DATA, "readOnly": read_only},
                {"name": "scratch", "mountPath": SCRATCH},
            ],
        }])


@dataclass(frozen=True)
class OwnPod:
    """A pod kubectl dr made (labelled app.kubernetes.io/managed-by=kubectl-dr) that mounts the claim."""

    name: str
    node: str | None
    run_id: str | None
    lease: str | None
    phase: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "runID": self.run_id, "phase": self.phase}


def own_pods(kube: Kube, namespace: str, claim: str | None = None) -> list[OwnPod]:
    """kubectl dr's own pods (that mount `claim`, if given), found by label: never consumers to stop.

    By label, not by name or annotation: any pod we made (a rescue pod of a run killed outright, one of a
    run still going, one of an older version) carries `app.kubernetes.io/managed-by=kubectl-dr`.
    """
    data: dict[str, Any] = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=OWN_SELECTOR)
    found = []
    for pod in data.get("items") or []:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(pods.LABEL_MANAGED) != pods.MANAGED_BY:
            continue  # the label check again: a server that ignored the selector must not mislead us
        if claim is not None and not pod_uses_claim(pod, claim) and not _mounts(pod, claim):
            continue
        found.append(OwnPod(str(meta["name"]), (pod.get("spec") or {}).get("nodeName"),
                            (meta.get("labels") or {}).get(RUN_ID_LABEL),
                            (meta.get("annotations") or {}).get(LEASE_ANNOTATION),
                            str((pod.get("status") or {}).get("phase") or "Pending")))
    return sorted(found, key=lambda p: p.name)


def _mounts(pod: dict[str, Any], claim: str) -> bool:
    """A finished pod of ours still mounts the claim in its spec (pod_uses_claim skips finished pods)."""
    return any(((v.get("persistentVolumeClaim") or {}).get("claimName")) == claim
               for v in (pod.get("spec") or {}).get("volumes") or [])


def start(kube: Kube, claim: Claim, *, image: str, purpose: str, read_only: bool, node: str | None,
          security: SecurityPlan, run: Run, lease: str, console: Console | None = None,
          timeout: float = 180.0, dry_run: str = "none") -> RescuePod | None:
    """Create the pod (its deletion registered first thing) and wait until it runs, or say why not.

    `dry_run="server"`: the pod is sent with dryRun=All (admission and RBAC answer) and None comes back.
    """
    if node:
        problem = node_ready(kube, node)
        if problem:
            raise DrError(f"cannot start a rescue pod for {claim.namespace}/{claim.name}: {problem}",
                          hint="The claim's consumer runs there and the volume is attached there; "
                               "wait for the node, or stop the consumer and retry.")
    plan = security
    while True:
        name = pods.pod_name("dr-rescue", claim.name)
        body = manifest(claim, name, image=image, purpose=purpose, read_only=read_only, node=node, security=plan,
                        run=run, lease=lease)
        try:
            helper = pods.create(kube, body, what="rescue", dry_run=dry_run)
            break
        except ApiError as exc:
            better = _pod_security_retry(exc, plan, claim, console)
            if better is None:
                raise
            plan = better
    if helper is None:
        return None
    pods.wait_running(helper, timeout=timeout, progress=console.say if console else None)
    return RescuePod(helper, node, image, plan, read_only)


def _pod_security_retry(exc: ApiError, plan: SecurityPlan, claim: Claim,
                        console: Console | None) -> SecurityPlan | None:
    """After a Pod Security rejection: the restricted plan if we had not tried it, else a clear error."""
    if exc.status != 403 or "violates PodSecurity" not in exc.message:
        return None
    better = replan(plan)
    if better is not None:
        if console is not None:
            import re

            level = re.search(r'violates PodSecurity "([a-z]+)', exc.message)
            enforced = f'"{level.group(1)}"' if level else "a level"
            seen = ("we may not read the namespace" if plan.level == UNKNOWN
                    else f'its label says "{plan.level}"; a cluster-wide default may apply')
            console.say(f"note: namespace {claim.namespace} enforces Pod Security {enforced} ({seen}), which "
                     'rejected a root rescue pod: trying again with one that meets "restricted"')
            for note in better.notes:
                console.say(f"note: {note}")
        return better
    raise ApiError(
        exc.status, exc.reason, exc.message,
        hint=(f"The rescue pod already meets the strictest Pod Security level (\"restricted\": non-root uid "
              f"{plan.pod.get('runAsUser')}, no privilege escalation, all capabilities dropped, RuntimeDefault "
              f"seccomp), so namespace {claim.namespace} rejects every pod kubectl dr can make. Ask a cluster "
              "admin to exempt the operation, or relabel the namespace for its duration "
              f"(kubectl label namespace {claim.namespace} pod-security.kubernetes.io/enforce=baseline --overwrite)."),
    ) from None
