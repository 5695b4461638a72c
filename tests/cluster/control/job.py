"""Job controller: runs pods until spec.completions succeed or spec.backoffLimit failures
(pkg/controller/job, NonIndexed completion mode only)."""

from __future__ import annotations

import copy
import datetime as dt

from tests.cluster.control.base import Controller
from tests.cluster.control.objects import (
    Json,
    condition,
    now,
    owned_by,
    pod_active,
    pod_from_template,
    pod_phase,
    pod_ready,
    random_suffix,
    set_condition,
)


def _finished(job: Json) -> bool:
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or [])


class JobController(Controller):
    name = "job-controller"
    watches = ("jobs.batch", "pods")

    async def reconcile(self) -> None:
        jobs, _ = await self.store.list("jobs.batch")
        if not jobs:
            return
        pods, _ = await self.store.list("pods")
        for job in jobs:
            if not job["metadata"].get("deletionTimestamp"):
                await self.sync(job, owned_by(pods, job))

    async def sync(self, job: Json, pods: list[Json]) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        spec = job["spec"]
        if _finished(job):
            await self._ttl(job)
            return
        completions = int(spec.get("completions", 1) if spec.get("completions") is not None else 1)
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None else 1)
        backoff = int(spec.get("backoffLimit", 6) if spec.get("backoffLimit") is not None else 6)
        succeeded = sum(1 for p in pods if pod_phase(p) == "Succeeded")
        failed = sum(1 for p in pods if pod_phase(p) == "Failed")
        active = [p for p in pods if pod_active(p)]
        done_reason: tuple[str, str, str] | None = None
        if failed > backoff:
            done_reason = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif succeeded >= completions:
            done_reason = ("Complete", "", "")
        elif spec.get("suspend"):
            for p in active:
                await self.store.delete("pods", ns, p["metadata"]["name"])
            active = []
        else:
            want = min(parallelism, completions - succeeded)
            uid = job["metadata"]["uid"]
            labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                      "controller-uid": uid, "job-name": name}
            for _ in range(want - len(active)):
                pod = pod_from_template(job, spec["template"], f"{name}-{random_suffix()}", labels)
                created = await self.store.create("pods", pod)
                active.append(created)
                await self.store.record_event(job, "Normal", "SuccessfulCreate",
                                              f"Created pod: {created['metadata']['name']}", self.name)
        if done_reason and done_reason[0] == "Failed":
            for p in active:
                await self.store.delete("pods", ns, p["metadata"]["name"])
            active = []

        def edit(o: Json) -> Json | None:
            old = o.get("status") or {}
            st: Json = copy.deepcopy(old)
            st.setdefault("startTime", now())
            st["active"] = len(active)
            st["ready"] = sum(1 for p in active if pod_ready(p))
            st["succeeded"], st["failed"] = succeeded, failed
            st["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
            st["uncountedTerminatedPods"] = {}
            for k in ("active", "succeeded", "failed"):
                if not st[k]:
                    st.pop(k)
            if done_reason:
                kind, reason, message = done_reason
                if kind == "Complete":
                    # Since 1.31 the controller first adds SuccessCriteriaMet, then Complete.
                    set_condition(st, "SuccessCriteriaMet", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods")
                    set_condition(st, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods")
                    st.setdefault("completionTime", now())
                else:
                    set_condition(st, "FailureTarget", "True", reason, message)
                    set_condition(st, "Failed", "True", reason, message)
                for c in st["conditions"]:
                    c.setdefault("lastProbeTime", c["lastTransitionTime"])
            if st == old:
                return None
            o["status"] = st
            return o

        await self.store.mutate("jobs.batch", ns, name, edit, subresource="status")
        if done_reason:
            kind = done_reason[0]
            if kind == "Complete":
                await self.store.record_event(job, "Normal", "Completed", "Job completed", self.name)
            else:
                await self.store.record_event(job, "Warning", done_reason[1], done_reason[2], self.name)

    async def _ttl(self, job: Json) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        done = condition(job, "Complete") or condition(job, "Failed") or {}
        at = done.get("lastTransitionTime")
        if not at:
            return
        finished = dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        if dt.datetime.now(dt.timezone.utc) >= finished + dt.timedelta(seconds=int(ttl)):
            await self.store.delete("jobs.batch", job["metadata"]["namespace"], job["metadata"]["name"],
                                    propagation="Background")
