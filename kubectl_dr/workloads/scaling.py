"""Scaling the consumers of a claim down to 0 (recorded on each object) and back.

The order of a scale-down is chosen so that no way a run can end loses the original replica counts:
1. refuse before any change unless every consumer can be stopped;
2. per workload, one merge patch writes the record and replicas 0 together, pinned to the
   resourceVersion we read (409 on a concurrent change: re-read and recompute, never overwrite);
3. the undo step for a workload is on the cleanup stack before its patch is sent, so a Ctrl-C that
   lands between the server applying the patch and us reading its answer still restores it (the
   step is a no-op on an object that does not carry this run's record);
4. only then wait for the pods to be gone.
A SIGKILL skips the undo steps but not the records: `kubectl dr scale restore` finds them.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError, DrError, UsageError
from kubectl_dr.kube.client import Kube
from kubectl_dr.pauses import pauses
from kubectl_dr.units import count, duration
from kubectl_dr.workloads import kinds
from kubectl_dr.workloads.consumers import Consumer
from kubectl_dr.workloads.records import (
    RestorePlan,
    read_record,
    replicas_of,
    restore_plan,
    scale_down_patch,
)
from kubectl_dr.workloads.specs import Json, pod_uses_claim

MERGE_PATCH = "application/merge-patch+json"
# A 409 means someone wrote the object between our read and our patch; re-read and recompute. More
# than a few in a row means something keeps writing it (a controller fighting us): stop and say so.
CONFLICT_RETRIES = 5
POLL_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 10.0


def new_run_id(moment: datetime | None = None) -> str:
    """When and which run: sortable, unique enough to tell two runs on the same workload apart."""
    return f"{(moment or datetime.now(timezone.utc)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def restore_hint(namespace: str) -> str:
    return f"Run `kubectl dr scale restore -n {namespace}` to put the replicas back."


@dataclass
class Scaled:
    """One workload a scale-down touched."""

    kind: str
    namespace: str
    name: str
    original_replicas: int
    # spec.replicas when this run found it (0 on a rerun after an interrupted run).
    found_replicas: int
    changed: bool
    step: cleanup.UndoStep | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name,
                "originalReplicas": self.original_replicas, "foundReplicas": self.found_replicas,
                "replicas": 0, "changed": self.changed}


@dataclass
class Restored:
    """One workload `scale_restore` (or `ScaleRecord.restore`) dealt with."""

    kind: str
    namespace: str
    name: str
    replicas: int
    original_replicas: int
    action: str  # "restored" | "kept" (see records.restore_plan)
    message: str
    run_id: str

    @property
    def would(self) -> str:
        """The action as a dry run says it."""
        return {"restored": "would restore", "kept": "would keep"}.get(self.action, f"would be {self.action}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "replicas": self.replicas,
                "originalReplicas": self.original_replicas, "action": self.action, "message": self.message,
                "runId": self.run_id}


@dataclass
class ScaleRecord:
    """What a scale-down did, to be undone on the normal path with `restore()` (or kept with `keep()`)."""

    kube: Kube
    namespace: str
    claim: str
    run_id: str
    workloads: list[Scaled] = field(default_factory=list)

    def restore(self, console: Console | None = None) -> list[Restored]:
        """Put every workload back (newest first) and drop the undo steps that would have done it."""
        results: list[Restored] = []
        for item in reversed(self.workloads):
            done = restore_workload(self.kube, kinds.KINDS[item.kind], item.namespace, item.name,
                                    run_id=self.run_id)
            if item.step is not None:
                cleanup.current().discard(item.step)
                item.step = None
            if done is not None:
                results.append(done)
                if console:
                    console.say(f"{resource_name(item.kind)}/{item.name} {done.message}")
        return results

    def keep(self) -> None:
        """Leave the workloads scaled down (the records stay for `kubectl dr scale restore`)."""
        for item in self.workloads:
            if item.step is not None:
                cleanup.current().discard(item.step)
                item.step = None

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "claim": self.claim, "runId": self.run_id,
                "workloads": [w.to_dict() for w in self.workloads]}


def resource_name(kind: str) -> str:
    """kubectl's `deployment.apps/web` style for progress lines."""
    k = kinds.KINDS[kind]
    group = k.api_version.rpartition("/")[0]
    return f"{k.kind.lower()}.{group}" if group else k.kind.lower()


def refuse_unstoppable(consumers: Iterable[Consumer]) -> None:
    blocked = [c for c in consumers if not c.stoppable]
    if not blocked:
        return
    claim, namespace = blocked[0].claim, blocked[0].namespace
    lines = [f"  {c.ref}: {c.reason}" for c in blocked]
    raise DrError(
        f'cannot stop every workload that uses claim "{claim}" in namespace "{namespace}"; nothing was changed:\n'
        + "\n".join(lines),
        hint="Stop those yourself as described, then run the command again.")


def _patch(kube: Kube, kind: kinds.Kind, namespace: str, name: str, body: Json, *, dry_run: bool) -> Json:
    result: Json = kube.request("PATCH", kind.object_path(namespace, name), body=body, content_type=MERGE_PATCH,
                                query={"dryRun": "All" if dry_run else None})
    return result


def _with_conflict_retries(kube: Kube, kind: kinds.Kind, namespace: str, name: str,
                           attempt: Callable[[Json], Any]) -> Any:
    """Run attempt(fresh object) until it is not answered with 409; None if the object is gone."""
    for _ in range(CONFLICT_RETRIES):
        try:
            obj: Json = kube.get(kind.object_path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        obj.setdefault("kind", kind.kind)
        try:
            return attempt(obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
    raise DrError(f"{kind.kind.lower()} {name} in namespace {namespace} kept changing while kubectl dr tried to "
                  f"update it ({CONFLICT_RETRIES} conflicts in a row)",
                  hint="Something else is writing it (a controller or an operator?); stop that and run again.")


def restore_workload(kube: Kube, kind: kinds.Kind, namespace: str, name: str, *,
                     run_id: str | None = None, dry_run: str = "none") -> Restored | None:
    """Put one recorded workload back; None if it carries no record (of `run_id`) or no longer exists.

    dry_run "client" only computes what would happen; "server" sends the patch with dryRun=All.
    """

    def attempt(obj: Json) -> Restored | None:
        plan: RestorePlan | None = restore_plan(obj, run_id=run_id)
        if plan is None:
            return None
        if dry_run != "client":
            _patch(kube, kind, namespace, name, plan.patch, dry_run=dry_run == "server")
        return Restored(kind.kind, namespace, name, plan.replicas, plan.record.original_replicas, plan.action,
                        plan.message if dry_run == "none" else plan.would, plan.record.run_id)

    result: Restored | None = _with_conflict_retries(kube, kind, namespace, name, attempt)
    return result


def scale_down(kube: Kube, consumers: list[Consumer], *, run_id: str, reason: str, timeout: float,
               console: Console, dry_run: bool = False) -> ScaleRecord:
    """Scale every consumer to 0 with a record on the object, then wait until no pod uses the claim.

    `dry_run` sends the patches with dryRun=All (the server validates and authorizes them, persists
    nothing) and does not wait. Raises DrError, before changing anything, if a consumer cannot be stopped.
    """
    refuse_unstoppable(consumers)
    if not consumers:
        return ScaleRecord(kube, "", "", run_id)
    namespace, claim = consumers[0].namespace, consumers[0].claim
    record = ScaleRecord(kube, namespace, claim, run_id)
    stack = cleanup.current()
    for consumer in consumers:
        kind = kinds.KINDS[consumer.kind]
        if not kind.scalable:  # stoppable non-scalable consumers do not exist today; nothing to patch
            continue
        step = None
        if not dry_run:
            step = stack.push(
                f"scale {resource_name(kind.kind)}/{consumer.name} back to its recorded replicas",
                functools.partial(_undo, kube, kind, namespace, consumer.name, run_id, console),
                fallback_hint=restore_hint(namespace))
        try:
            scaled = _scale_one(kube, kind, namespace, consumer.name, run_id=run_id, reason=reason,
                                dry_run=dry_run)
        except ApiError:
            # The server refused the patch: it changed nothing, so there is nothing to undo here.
            if step is not None:
                stack.discard(step)
            raise
        if scaled is None:
            if step is not None:
                stack.discard(step)
            continue
        scaled.step = step
        record.workloads.append(scaled)
        if dry_run:  # the patch went with dryRun=All: nothing was scaled
            what = ("is already at 0, record would be kept" if not scaled.changed
                    else f"would be scaled from {scaled.found_replicas} to 0")
        else:
            what = "already at 0, record kept" if not scaled.changed else f"scaled from {scaled.found_replicas} to 0"
        console.say(f"{resource_name(kind.kind)}/{consumer.name} {what} (original replicas: "
                 f"{scaled.original_replicas}){' (server dry run)' if dry_run else ''}")
    if not dry_run:
        wait_for_claim_released(kube, namespace, claim, timeout=timeout, console=console)
    return record


def _undo(kube: Kube, kind: kinds.Kind, namespace: str, name: str, run_id: str, console: Console) -> None:
    restored = restore_workload(kube, kind, namespace, name, run_id=run_id)
    if restored is not None:
        console.say(f"{resource_name(kind.kind)}/{name} {restored.message}")


def _scale_one(kube: Kube, kind: kinds.Kind, namespace: str, name: str, *, run_id: str, reason: str,
               dry_run: bool) -> Scaled | None:
    def attempt(obj: Json) -> Scaled | None:
        found = replicas_of(obj)
        if found == 0 and read_record(obj) is None:
            return None  # not running and not ours: nothing to stop, nothing to put back
        patch, original = scale_down_patch(obj, run_id=run_id, reason=reason)
        _patch(kube, kind, namespace, name, patch, dry_run=dry_run)
        return Scaled(kind.kind, namespace, name, original, found, changed=found != 0)

    result: Scaled | None = _with_conflict_retries(kube, kind, namespace, name, attempt)
    return result


def pods_using_claim(kube: Kube, namespace: str, claim: str) -> list[Json]:
    data = kube.get(f"/api/v1/namespaces/{namespace}/pods")
    return [p for p in data.get("items") or [] if pod_uses_claim(p, claim)]


def _pod_state(pod: Json) -> str:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    state = "Terminating" if meta.get("deletionTimestamp") else str((pod.get("status") or {}).get("phase", "Pending"))
    node = spec.get("nodeName")
    return f"{meta['name']} ({state}{' on ' + node if node else ''})"


def wait_for_claim_released(kube: Kube, namespace: str, claim: str, *, timeout: float, console: Console) -> None:
    """Poll until no pod (running or terminating) mounts the claim; DrError naming the pods on timeout."""
    deadline = time.monotonic() + timeout
    last_states: str | None = None
    last_report = 0.0
    pause = pauses(POLL_SECONDS)  # a pod with a short grace period is gone within a moment
    while True:
        pods = pods_using_claim(kube, namespace, claim)
        if not pods:
            if last_states:
                console.say(f'no pod uses claim "{claim}" any more')
            return
        names = sorted(p["metadata"]["name"] for p in pods)
        states = ", ".join(_pod_state(p) for p in sorted(pods, key=lambda p: str(p["metadata"]["name"])))
        now = time.monotonic()
        # A line when anything changes (a pod starts terminating, one is gone), else one every few seconds.
        if states != last_states or now - last_report >= PROGRESS_EVERY_SECONDS:
            console.say(f'waiting for {count(len(pods), "pod")} using claim "{claim}" to stop: {states}')
            last_states, last_report = states, now
        if now >= deadline:
            raise DrError(
                f'timed out after {duration(timeout)} waiting for the pods using claim "{claim}" to stop: {states}',
                hint=(f"kubectl dr puts the replicas back as it exits. See why the pods do not stop with "
                      f"`kubectl describe pod {names[0]} -n {namespace}`, or give them longer with --timeout."))
        time.sleep(min(next(pause), max(deadline - now, 0.05)))


def parse_workload(text: str) -> tuple[str | None, str]:
    """`web`, `deployment/web`, `deploy/web`, `sts/db` → (Kind name or None, name)."""
    if "/" not in text:
        return None, text
    kind_text, _, name = text.partition("/")
    kind = kinds.ALIASES.get(kind_text.lower().split(".", 1)[0])
    if kind is None or not name:
        raise UsageError(f'"{text}": expected NAME or KIND/NAME with KIND one of deployment, statefulset, '
                         "replicaset, replicationcontroller")
    return kind, name


def require_workloads(kube: Kube, namespace: str | None, names: list[str]) -> None:
    """Raise NotFound, in kubectl's words, for a named workload that exists nowhere it is looked for.

    A workload without a record is fine to name (restore is idempotent); one that does not exist is a typo or
    the wrong namespace, and "nothing to restore" would hide that. Checked before anything is changed.
    """
    for text in names:
        kind, name = parse_workload(text)
        candidates = [kinds.KINDS[kind]] if kind else list(kinds.SCALABLE)
        if not any(_exists(kube, k, namespace, name) for k in candidates):
            where = "" if namespace is not None else " in any namespace"
            # One line per kind looked at, as `kubectl get deploy,sts,rs,rc NAME` prints them.
            lines = [f'{_resource(k)} "{name}" not found{where}' for k in candidates]
            raise ApiError(404, "NotFound", "\nError from server (NotFound): ".join(lines))


def _resource(kind: kinds.Kind) -> str:
    group = kind.api_version.rpartition("/")[0]
    return f"{kind.plural}.{group}" if group else kind.plural


def _exists(kube: Kube, kind: kinds.Kind, namespace: str | None, name: str) -> bool:
    if namespace is not None:
        return kube.exists(kind.object_path(namespace, name))
    found = kube.get(kind.collection_path(None), fieldSelector=f"metadata.name={name}").get("items") or []
    return bool(found)


def recorded_workloads(kube: Kube, namespace: str | None) -> list[Json]:
    """Every scalable workload carrying a kubectl dr record, in one namespace or all (`None`)."""
    found: list[Json] = []
    for kind in kinds.SCALABLE:
        for item in kube.get(kind.collection_path(namespace)).get("items") or []:
            item.setdefault("kind", kind.kind)
            if read_record(item) is not None:
                found.append(item)
    return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""), *kinds.order_key(o["kind"],
                                                                                             o["metadata"]["name"])))


def is_wanted(kind: str, name: str, wanted: list[tuple[str | None, str]]) -> bool:
    """Whether a workload is among those named (`parse_workload`'s pairs); none named means every one."""
    return not wanted or any(n == name and k in (None, kind) for k, n in wanted)


def scale_restore(kube: Kube, namespace: str | None, *, names: list[str] | None = None, run_id: str | None = None,
                  console: Console, dry_run: str = "none") -> list[Restored]:
    """Put back every recorded workload (optionally only `names`, or only those of `run_id`). Idempotent."""
    wanted = [parse_workload(n) for n in names or []]
    results: list[Restored] = []
    for obj in recorded_workloads(kube, namespace):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if not is_wanted(kind, name, wanted):
            continue
        done = restore_workload(kube, kinds.KINDS[kind], obj["metadata"]["namespace"], name, run_id=run_id,
                                dry_run=dry_run)
        if done is not None:
            results.append(done)
            suffix = f" ({dry_run} dry run)" if dry_run != "none" else ""
            console.say(f"{resource_name(kind)}/{name} -n {done.namespace}: {done.message}{suffix}")
    return results
