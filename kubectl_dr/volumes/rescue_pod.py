"""The rescue pod: mounts only the claim (and a scratch emptyDir), no token, no links, sleeps until exec.

It is a plain busybox (or `--image`) container that runs `sleep` so we can exec into it: the data
moves over the exec stream, so the pod needs no network access, no service account and nothing from
the cluster but the volume. Placement follows the claim's access mode: for a ReadWriteOnce claim
still in use, the pod is pinned to the consumer's node (where the volume is attached), so a backup
does not stop the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubectl_dr import volumes
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.volumes.claims import Claim, node_ready
from kubectl_dr.volumes.security import UNKNOWN, SecurityPlan, replan
from kubectl_dr.workloads.claims import pod_uses_claim

DEFAULT_IMAGE = volumes.DEFAULT_IMAGE
CONTAINER = "rescue"
DATA = "/data"
SCRATCH = "/scratch"
# Long enough for any job; the pod is deleted by us (or by the cleanup stack) well before.
SLEEP_SECONDS = 7 * 24 * 3600
# Which run made the pod (host and pid), so a later run can tell a killed run's pod from a live one.
OWNER_ANNOTATION = "kubectl-dr.io/owner"
OWN_SELECTOR = f"{pods.LABEL_MANAGED}={pods.MANAGED_BY}"


@dataclass
class RescuePod:
    helper: pods.HelperPod
    node: str | None
    image: str
    security: SecurityPlan
    read_only: bool

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


def manifest(claim: Claim, name: str, *, image: str, purpose: str, read_only: bool, node: str | None,
             security: SecurityPlan) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security.pod,
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", str(SLEEP_SECONDS)],
            "workingDir": DATA,
            "securityContext": security.container,
            "volumeMounts": [
                {"name": "data", "mountPath": DATA, "readOnly": read_only},
                {"name": "scratch", "mountPath": SCRATCH},
            ],
        }],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": claim.name, "readOnly": read_only}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    if node:
        spec["nodeName"] = node
        # A pinned pod skips the scheduler; tolerate taints so it can share a control-plane node too.
        spec["tolerations"] = [{"operator": "Exists"}]
    labels = {**pods.managed_labels(purpose), "kubectl-dr.io/pvc": claim.name[:63]}
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}, separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": claim.namespace, "labels": labels,
                     "annotations": {"kubectl-dr.io/claim": claim.name, OWNER_ANNOTATION: owner}},
        "spec": spec,
    }


@dataclass(frozen=True)
class OwnPod:
    """A pod kubectl dr made (labelled app.kubernetes.io/managed-by=kubectl-dr) that mounts the claim."""

    name: str
    node: str | None
    owner_host: str | None
    owner_pid: int | None

    @property
    def run_alive(self) -> bool:
        """True only when the run that made it is known to be alive: a process on this machine."""
        if self.owner_host != socket.gethostname() or not self.owner_pid or self.owner_pid == os.getpid():
            return False
        try:
            with open(f"/proc/{self.owner_pid}/cmdline", "rb") as f:
                return b"kubectl" in f.read()
        except OSError:
            return False


def _owner(pod: dict[str, Any]) -> tuple[str | None, int | None]:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
    if not isinstance(raw, str):
        return None, None
    with contextlib.suppress(TypeError, ValueError, KeyError, AttributeError):
        data = json.loads(raw)
        return str(data["host"]), int(data["pid"])
    return None, None


def own_pods(kube: Kube, namespace: str, claim: str) -> list[OwnPod]:
    """kubectl dr's own pods that mount the claim, found by label: never consumers to stop or wait for.

    By label, not by name or annotation: any pod we made (a rescue pod of a run killed outright, one of a
    run still going, one of an older version) carries `app.kubernetes.io/managed-by=kubectl-dr`.
    """
    data: dict[str, Any] = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=OWN_SELECTOR)
    found = []
    for pod in data.get("items") or []:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(pods.LABEL_MANAGED) != pods.MANAGED_BY or not pod_uses_claim(pod, claim):
            continue  # the label check again: a server that ignored the selector must not mislead us
        host, pid = _owner(pod)
        found.append(OwnPod(str(pod["metadata"]["name"]), (pod.get("spec") or {}).get("nodeName"), host, pid))
    return sorted(found, key=lambda p: p.name)


def remove_leftovers(kube: Kube, claim: Claim, own: list[OwnPod], say: Callable[[str], None]) -> None:
    """Delete our pods that still mount the claim before a job that needs it alone (restore, quiesce).

    They hold the volume (a ReadWriteOnce claim cannot attach elsewhere, a ReadWriteOncePod claim admits
    no second pod, and stopping consumers waits for every pod of the claim). A pod whose run is still
    alive on this machine is not taken from it: that is another command working on the same claim.
    """
    live = [p for p in own if p.run_alive]
    if live:
        raise DrError(
            f"another kubectl dr command (pid {live[0].owner_pid}) is using {claim.namespace}/{claim.name} through "
            f"pod {live[0].name}; two commands must not work on one claim at once",
            hint="Wait for it to finish, or stop it (Ctrl-C: it removes its pod), then run this again. "
                 "Nothing was changed.")
    for pod in own:
        say(f"deleting rescue pod {claim.namespace}/{pod.name} left behind by an earlier run that was killed")
        pods.HelperPod(kube, claim.namespace, pod.name).delete(wait=True)


def start(kube: Kube, claim: Claim, *, image: str, purpose: str, read_only: bool, node: str | None,
          security: SecurityPlan, progress: Callable[[str], None] | None = None,
          timeout: float = 180.0) -> RescuePod:
    """Create the pod (its deletion registered first thing) and wait until it runs, or say why not."""
    if node:
        problem = node_ready(kube, node)
        if problem:
            raise DrError(f"cannot start a rescue pod for {claim.namespace}/{claim.name}: {problem}",
                          hint="The claim's consumer runs there and the volume is attached there; "
                               "wait for the node, or stop the consumer and retry.")
    plan = security
    while True:
        name = pods.pod_name("dr-rescue", claim.name)
        body = manifest(claim, name, image=image, purpose=purpose, read_only=read_only, node=node, security=plan)
        try:
            helper = pods.create(kube, body, what="rescue")
            break
        except ApiError as exc:
            better = _pod_security_retry(exc, plan, claim, progress)
            if better is None:
                raise
            plan = better
    pods.wait_running(helper, timeout=timeout, progress=progress)
    return RescuePod(helper, node, image, plan, read_only)


def _pod_security_retry(exc: ApiError, plan: SecurityPlan, claim: Claim,
                        progress: Callable[[str], None] | None) -> SecurityPlan | None:
    """After a Pod Security rejection: the restricted plan if we had not tried it, else a clear error."""
    if exc.status != 403 or "violates PodSecurity" not in exc.message:
        return None
    better = replan(plan)
    if better is not None:
        if progress is not None:
            level = re.search(r'violates PodSecurity "([a-z]+)', exc.message)
            enforced = f'"{level.group(1)}"' if level else "a level"
            seen = ("we may not read the namespace" if plan.level == UNKNOWN
                    else f'its label says "{plan.level}"; a cluster-wide default may apply')
            progress(f"note: namespace {claim.namespace} enforces Pod Security {enforced} ({seen}), which "
                     'rejected a root rescue pod: trying again with one that meets "restricted"')
            for note in better.notes:
                progress(f"note: {note}")
        return better
    raise ApiError(
        exc.status, exc.reason, exc.message,
        hint=(f"The rescue pod already meets the strictest Pod Security level (\"restricted\": non-root uid "
              f"{plan.pod.get('runAsUser')}, no privilege escalation, all capabilities dropped, RuntimeDefault "
              f"seccomp), so namespace {claim.namespace} rejects every pod kubectl dr can make. Ask a cluster "
              "admin to exempt the operation, or relabel the namespace for its duration "
              f"(kubectl label namespace {claim.namespace} pod-security.kubernetes.io/enforce=baseline --overwrite)."),
    ) from None
