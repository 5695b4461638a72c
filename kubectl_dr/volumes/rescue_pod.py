"""The rescue pod: mounts only the claim (and a scratch emptyDir), no token, no links, sleeps until exec.

It is a plain busybox (or `--image`) container that runs `sleep` so we can exec into it: the data
moves over the exec stream, so the pod needs no network access, no service account and nothing from
the cluster but the volume. Placement follows the claim's access mode: for a ReadWriteOnce claim
still in use, the pod is pinned to the consumer's node (where the volume is attached), so a backup
does not stop the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.volumes.claims import Claim, node_ready
from kubectl_dr.volumes.security import SecurityPlan

DEFAULT_IMAGE = "busybox:1.36"
CONTAINER = "rescue"
DATA = "/data"
SCRATCH = "/scratch"
# Long enough for any job; the pod is deleted by us (or by the cleanup stack) well before.
SLEEP_SECONDS = 7 * 24 * 3600


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
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": claim.namespace, "labels": labels,
                     "annotations": {"kubectl-dr.io/claim": claim.name}},
        "spec": spec,
    }


def leftovers(kube: Kube, claim: Claim) -> list[str]:
    """Rescue pods of this claim left by a run that was killed outright (SIGKILL, lost machine)."""
    selector = f"{pods.LABEL_MANAGED}={pods.MANAGED_BY},kubectl-dr.io/pvc={claim.name[:63]}"
    data: dict[str, Any] = kube.get(f"/api/v1/namespaces/{claim.namespace}/pods", labelSelector=selector)
    return [str(p["metadata"]["name"]) for p in data.get("items") or []
            if (p["metadata"].get("annotations") or {}).get("kubectl-dr.io/claim") == claim.name]


def remove_leftovers(kube: Kube, claim: Claim, names: list[str], say: Callable[[str], None]) -> None:
    """Delete them: they hold the volume (a ReadWriteOnce claim cannot attach elsewhere meanwhile)."""
    for name in names:
        say(f"deleting rescue pod {claim.namespace}/{name} left behind by an earlier run that was killed")
        pods.HelperPod(kube, claim.namespace, name).delete(wait=True)


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
    name = pods.pod_name("dr-rescue", claim.name)
    body = manifest(claim, name, image=image, purpose=purpose, read_only=read_only, node=node, security=security)
    helper = pods.create(kube, body, what="rescue")
    pods.wait_running(helper, timeout=timeout, progress=progress)
    return RescuePod(helper, node, image, security, read_only)
