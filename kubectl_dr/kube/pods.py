"""Short-lived helper pods: create, wait until they run (or say precisely why not), and always remove.

The "exposer" of the data movers: every feature that needs a pod in the cluster (rescue pods for volumes,
snapshot pods on control-plane nodes) goes through here, so each gets the same fail-fast diagnosis —
image pull errors, unschedulable pods, volumes that cannot attach, Pod Security rejections — and the
same guarantee that the pod is deleted however the command ends.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, overload

from kubectl_dr import cleanup, units
from kubectl_dr.errors import ApiError, DrError, ServerUnreachable
from kubectl_dr.kube.client import Kube
from kubectl_dr.pauses import pauses

MANAGED_BY = "kubectl-dr"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_PURPOSE = "kubectl-dr.io/purpose"

# Container waiting reasons that will not resolve by waiting longer.
FATAL_WAITING = {
    "ImagePullBackOff": "cannot be pulled",
    "ErrImagePull": "cannot be pulled",
    "InvalidImageName": "is not a valid image name",
    "ErrImageNeverPull": "is not on the node and imagePullPolicy is Never",
    "CreateContainerConfigError": "cannot be configured",
    "CreateContainerError": "cannot be created",
    "RunContainerError": "cannot be started",
    "CrashLoopBackOff": "keeps crashing",
}
# ErrImagePull is often followed by a successful retry on a flaky registry; give it this long.
PULL_GRACE_SECONDS = 15.0


def pod_name(prefix: str, hint: str) -> str:
    """A valid, recognisable, unique pod name: PREFIX-HINT-xxxxx within 63 characters."""
    clean = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-") or "x"
    suffix = secrets.token_hex(3)[:5]
    room = 63 - len(prefix) - len(suffix) - 2
    return f"{prefix}-{clean[:room].strip('-')}-{suffix}"


def managed_labels(purpose: str) -> dict[str, str]:
    return {LABEL_MANAGED: MANAGED_BY, LABEL_PURPOSE: purpose}


def pod_manifest(name: str, namespace: str, *, purpose: str, containers: list[dict[str, Any]],
                 node: str | None = None, volumes: list[dict[str, Any]] | None = None,
                 labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                 deadline: int | None = None, **spec: Any) -> dict[str, Any]:
    """The one Pod manifest of every helper pod: ours by label, no service-account token, no service links,
    gone at once when deleted, never restarted, and ended by the kubelet after `deadline` seconds even if the
    run that made it was killed. Pinned to `node`, it tolerates every taint: a NotReady node (its etcd is why)
    taints itself NoExecute and the pod must run there anyway. `spec` adds fields (hostNetwork, initContainers,
    securityContext …)."""
    body: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
    }
    if deadline is not None:
        body["activeDeadlineSeconds"] = deadline
    if node is not None:
        body["nodeName"] = node
        body["tolerations"] = [{"operator": "Exists"}]
    body.update(spec)
    body["volumes"] = list(volumes or [])
    body["containers"] = containers
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**managed_labels(purpose), **(labels or {})}, "annotations": dict(annotations or {})},
        "spec": body,
    }


def host_path_volume(name: str, path: str, kind: str = "Directory") -> dict[str, Any]:
    """A node directory as a volume; `Directory`: a path that is not there is a finding, not something to make."""
    return {"name": name, "hostPath": {"path": path, "type": kind}}


class PodStartError(DrError):
    """The helper pod cannot run; the message says why in the cluster's own words."""


@dataclass
class HelperPod:
    kube: Kube
    namespace: str
    name: str
    step: cleanup.UndoStep | None = None
    # Called once the pod's deletion is asked for (e.g. to stop its heartbeat).
    on_delete: list[Callable[[], None]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def get(self) -> dict[str, Any]:
        pod: dict[str, Any] = self.kube.get(self.path)
        return pod

    def wait_gone(self, timeout: float) -> None:
        """Until the pod is gone. One found that is not being deleted is asked again: our DELETE came before it
        existed. That happens when an interruption cuts off the create: the API server still creates the pod
        after the client gave up on the answer, and the DELETE sent at once finds nothing (seen: the POST cut
        after 3 ms, the DELETE answered 404 at 30 ms, the pod there at 60 ms). Waiting without asking again
        waited for a pod nobody deletes."""
        deadline = time.monotonic() + timeout
        pause = pauses(0.3, first=0.05)  # a helper pod is usually gone within a tenth of a second
        while (found := self._current()) is not None:
            if not (found.get("metadata") or {}).get("deletionTimestamp"):
                self.request_delete()
            if time.monotonic() > deadline:
                raise DrError(f"pod {self.namespace}/{self.name} is still terminating after "
                              f"{units.duration(timeout)}",
                              hint=f"Check it with `kubectl get pod -n {self.namespace} {self.name}`.")
            time.sleep(next(pause))

    def _current(self) -> dict[str, Any] | None:
        """The pod as the API server has it now, or None once it is gone."""
        try:
            return self.get()
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def logs(self, container: str, tail_lines: int = 20) -> str:
        try:
            return self.kube.text(f"{self.path}/log", container=container, tailLines=tail_lines)
        except DrError:  # logs only decorate an error we are already reporting
            return ""

    def request_delete(self) -> None:
        """Ask for the deletion now and wait for it later (`delete()`): the pod terminates while we work.

        The cleanup step stays registered, so an interruption still waits until the pod is gone.
        """
        for hook in self.on_delete:
            hook()
        self.on_delete.clear()
        try:
            self.kube.request("DELETE", self.path, body={"gracePeriodSeconds": 0, "propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def delete(self, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Delete the pod and (by default) wait until it is gone, so its volumes are free again."""
        self.request_delete()
        if wait:
            self.wait_gone(timeout)
        if self.step is not None:
            cleanup.current().discard(self.step)
            self.step = None


def delete_together(created: list[HelperPod], *, quiet: bool = False) -> None:
    """Every pod deleted and waited for, each asked to go before the first is waited for (they terminate side by
    side). An error deleting one does not stop the others: the first is raised after them, or, `quiet` (on the
    way out of a failure, whose error must not be replaced), kept back. A pod that could not be deleted keeps its
    cleanup step, so the command's exit tries it again."""
    for pod in created:
        with contextlib.suppress(DrError):  # asked again (and the error kept) by the wait below
            pod.request_delete()
    failed: DrError | None = None
    for pod in created:
        try:
            pod.delete(wait=True, timeout=60)
        except DrError as exc:
            failed = failed or exc
    if failed is not None and not quiet:
        raise failed


@overload
def create(kube: Kube, manifest: dict[str, Any], *, what: str) -> HelperPod: ...
@overload
def create(kube: Kube, manifest: dict[str, Any], *, what: str, dry_run: str) -> HelperPod | None: ...


def create(kube: Kube, manifest: dict[str, Any], *, what: str, dry_run: str = "none") -> HelperPod | None:
    """Create the pod and register its deletion with the command's cleanup stack before anything else.

    `dry_run="server"` sends it with dryRun=All: admission (Pod Security) and RBAC answer, nothing is
    created, and None comes back.
    """
    namespace = manifest["metadata"]["namespace"]
    name = manifest["metadata"]["name"]
    if dry_run == "server":
        try:
            kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest, query={"dryRun": "All"})
        except ApiError as exc:
            raise _creation_error(exc, namespace, what) from None
        return None
    pod = HelperPod(kube, namespace, name)
    confirmed = False

    def remove() -> None:
        pod.step = None
        pod.delete(wait=True, timeout=60)
        if not confirmed:
            # Interrupted while the POST was in flight: the API server may create the pod just after our
            # DELETE found nothing. Look once more, a moment later.
            time.sleep(2)
            pod.delete(wait=True, timeout=60)

    # Registered before the POST: a signal that lands after the API server created the pod, but before its
    # answer reached us, must still delete it (the name is ours alone: it ends in a random suffix).
    pod.step = cleanup.current().push(
        f"delete {what} pod {namespace}/{name}", remove,
        fallback_hint=(f"Delete it yourself: kubectl delete pod -n {namespace} {name} (it also ends by itself a "
                       "few minutes after this run stopped renewing it)"),
    )
    try:
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest)
    except ApiError as exc:
        cleanup.current().discard(pod.step)  # refused: nothing of ours to delete (409 would be someone else's)
        pod.step = None
        raise _creation_error(exc, namespace, what) from None
    except ServerUnreachable:
        # Refused at connect: the request never reached a server, so there is no pod to delete (other transport
        # errors, such as a timeout, leave that open and keep the step).
        cleanup.current().discard(pod.step)
        pod.step = None
        raise
    confirmed = True
    return pod


def _creation_error(exc: ApiError, namespace: str, what: str) -> DrError:
    if exc.status == 403 and "violates PodSecurity" in exc.message:
        level = re.search(r'violates PodSecurity "([a-z]+)', exc.message)
        return ApiError(
            exc.status, exc.reason, exc.message,
            hint=(f"Namespace {namespace} enforces the Pod Security level "
                  f"\"{level.group(1) if level else '?'}\", which forbids the {what} pod this needs. "
                  "Ask a cluster admin, or relabel the namespace for the duration of the operation."),
        )
    if exc.status == 403:
        return ApiError(exc.status, exc.reason, exc.message,
                        hint=f"kubectl dr needs to create pods (and pods/exec) in namespace {namespace}; "
                             "see the README for the RBAC rules.")
    if exc.status == 404 and "namespaces" in exc.message:
        return ApiError(exc.status, exc.reason, exc.message)
    return exc


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _image_of(pod: dict[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        if c.get("name") == container:
            return str(c.get("image", "?"))
    return "?"


def _events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        data = kube.get(f"/api/v1/namespaces/{namespace}/events",
                        fieldSelector=f"involvedObject.kind=Pod,involvedObject.name={name}")
    except DrError:
        return []
    items: list[dict[str, Any]] = data.get("items") or []
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def require_node(kube: Kube, node: str) -> None:
    """A node named on the command line exists: checked before any pod (or a dry run's plan) names it."""
    try:
        kube.get(f"/api/v1/nodes/{node}")
    except ApiError as exc:
        if exc.status == 404:
            raise DrError(f'node "{node}" does not exist', hint="`kubectl get nodes` lists them.") from None
        raise


def _node_not_ready(kube: Kube, node: str) -> str | None:
    try:
        obj = kube.get(f"/api/v1/nodes/{node}")
    except ApiError as exc:
        if exc.status == 404:
            return f'node "{node}" does not exist'
        return None
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            return f"node {node} is not ready (Ready={cond.get('status')}: {cond.get('message') or cond.get('reason')})"
    return None


def diagnose(pod: dict[str, Any], first_seen: dict[str, float], now: float) -> str | None:
    """A reason the pod will not run, if its status already shows one."""
    name = pod["metadata"]["name"]
    for cs in _container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING:
            key = f"{cs.get('name')}/{reason}"
            first_seen.setdefault(key, now)
            if reason == "ErrImagePull" and now - first_seen[key] < PULL_GRACE_SECONDS:
                continue
            image = cs.get("image") or _image_of(pod, str(cs.get("name")))
            what = f'image "{image}"' if "Image" in reason else f'container "{cs.get("name")}"'
            detail = waiting.get("message") or ""
            return f"pod {name}: {what} {FATAL_WAITING[reason]} ({reason}){': ' + detail if detail else ''}"
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            message = f": {terminated['message']}" if terminated.get("message") else ""
            return (f"pod {name}: container \"{cs.get('name')}\" failed with exit code {terminated.get('exitCode')}"
                    f" ({terminated.get('reason') or 'Error'}){message}")
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Failed":
        status = pod.get("status") or {}
        return f"pod {name} failed: {status.get('reason') or ''} {status.get('message') or ''}".strip()
    return None


def wait_running(
    pod: HelperPod,
    *,
    timeout: float = 180.0,
    stuck_after: float = 45.0,
    progress: Callable[[str], None] | None = None,
    may_finish: Collection[str] = (),
) -> dict[str, Any]:
    """Wait until every container runs; fail fast with the cluster's reason when it cannot.

    `may_finish`: containers that count as started once they ran and ended with exit code 0 (a short job beside
    the container we exec into: an etcd snapshot saved while it is served); a non-zero end fails as always.

    Scheduling and attach problems get `stuck_after` seconds (a volume may still be detaching from the
    pod we just stopped) before we give up with the scheduler's or attacher's message; a hostPath the node
    does not have, none.
    """
    start = time.monotonic()
    first_seen: dict[str, float] = {}
    told: set[str] = set()
    polls = 0
    while True:
        now = time.monotonic()
        try:
            obj = pod.get()
        except ApiError as exc:
            if exc.status == 404:
                raise PodStartError(f"pod {pod.namespace}/{pod.name} disappeared while starting "
                                    "(deleted by someone else, or evicted)") from None
            raise
        status = obj.get("status") or {}
        statuses = status.get("containerStatuses") or []
        containers = (obj.get("spec") or {}).get("containers") or []
        if status.get("phase") == "Running" and len(statuses) == len(containers) and all(
            _started(cs, may_finish) for cs in statuses
        ):
            return dict(obj)
        reason = diagnose(obj, first_seen, now)
        if reason is None and status.get("phase") == "Succeeded":
            reason = f"pod {pod.name} exited before it could be used"
        if reason is not None:
            raise _with_logs(pod, obj, PodStartError(reason))
        node = (obj.get("spec") or {}).get("nodeName")
        blocked = _blocking_message(pod, obj, node)
        if blocked and progress and blocked not in told:
            told.add(blocked)
            progress(f"waiting for pod {pod.name}: {blocked}")
        if blocked and (now - start > stuck_after or _final(blocked)):
            raise PodStartError(f"pod {pod.namespace}/{pod.name} cannot start: {blocked}")
        if now - start > timeout:
            raise PodStartError(f"pod {pod.namespace}/{pod.name} did not start within {units.duration(timeout)} "
                                f"(phase {status.get('phase', 'unknown')}){': ' + blocked if blocked else ''}")
        polls += 1
        # Quick looks first (a pod on a warm node runs within a fraction of a second), then every 0.25 s.
        time.sleep(min(0.25, 0.03 * 2**polls) if now - start < 5 else 0.75)


def _started(status: dict[str, Any], may_finish: Collection[str]) -> bool:
    state = status.get("state") or {}
    if state.get("running"):
        return True
    return status.get("name") in may_finish and (state.get("terminated") or {}).get("exitCode") == 0


def _final(blocked: str) -> bool:
    """A blocking reason that waiting does not change: the kubelet checked a hostPath on the node and it is not
    there (or not of its type). Nothing is detaching; the user hears it at once instead of after `stuck_after`."""
    return blocked.startswith("FailedMount:") and "hostPath type check failed" in blocked


def _blocking_message(pod: HelperPod, obj: dict[str, Any], node: str | None) -> str | None:
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"unschedulable: {cond.get('message') or cond.get('reason')}"
    if node:
        not_ready = _node_not_ready(pod.kube, node)
        if not_ready:
            return not_ready
    for event in reversed(_events(pod.kube, pod.namespace, pod.name)):
        if event.get("type") == "Warning" and event.get("reason") in ("FailedAttachVolume", "FailedMount",
                                                                        "FailedScheduling"):
            return f"{event.get('reason')}: {event.get('message')}"
    return None


def _with_logs(pod: HelperPod, obj: dict[str, Any], error: PodStartError) -> PodStartError:
    for cs in _container_statuses(obj):
        if (cs.get("state") or {}).get("terminated", {}).get("exitCode", 0) not in (0, None):
            text = pod.logs(str(cs.get("name"))).strip()
            if text:
                error.hint = f"Last log lines of container {cs.get('name')}:\n{text}"
                break
    return error
