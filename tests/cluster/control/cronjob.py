"""CronJob controller (pkg/controller/cronjob, the v2 controller): Jobs on schedule.

- the schedule (control/cron.py) runs in `spec.timeZone` (IANA name; the controller's zone, UTC here, when
  unset); the most recent missed activation since `status.lastScheduleTime` (or the creation time) is the one
  started, and with `startingDeadlineSeconds` nothing older than the deadline counts (no pile-up after an
  outage); more than 100 missed activations give the TooManyMissedTimes warning;
- `concurrencyPolicy`: Allow starts alongside active Jobs, Forbid skips the activation while one is
  active, Replace deletes the active Jobs first; `suspend: true` starts nothing;
- a Job is named NAME-<scheduled time in minutes since the epoch>, owned by the CronJob, annotated with
  batch.kubernetes.io/cronjob-scheduled-timestamp; its labels and annotations come from the jobTemplate;
- status.active lists the running Jobs, status.lastScheduleTime and status.lastSuccessfulTime follow them,
  and finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit are deleted, oldest first.

Test-only fast schedules: `up --cron-period-seconds N` (fixture `cron_period_seconds=N`) runs every schedule
on a compressed clock where one cron minute lasts N seconds, starting when the cluster was first started
(`cron_clock_origin` in its options, kept across restarts so the clock never runs backwards past the
lastScheduleTime it wrote): `* * * * *` then fires every N seconds. Times the controller writes
(lastScheduleTime, the name suffix, the scheduled-timestamp annotation) are on that clock, and a test
reads it with `compressed_clock` (the fixture's `Cluster.cron_clock`).
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control import cron
from tests.cluster.control.base import Controller
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, condition, controller_ref, owned_by

COMPONENT = "cronjob-controller"
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED = 100
CLOCK_ORIGIN_OPTION = "cron_clock_origin"


def compressed_clock(real: float, origin: float, period_seconds: float | None) -> dt.datetime:
    """The CronJob clock at real time `real` (seconds since the epoch): the real time itself, or, with a
    period, a clock equal to the real one at `origin` that runs 60/period times as fast from there."""
    seconds = origin + (real - origin) * 60.0 / period_seconds if period_seconds else real
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finished(job: Json) -> str | None:
    for kind in ("Complete", "Failed"):
        c = condition(job, kind)
        if c and c.get("status") == "True":
            return kind
    return None


class CronJobController(Controller):
    name = COMPONENT
    watches = ("cronjobs.batch", "jobs.batch")
    resync_seconds = 1.0

    def __init__(self, store: Any, layout: Layout, *, period_seconds: float | None = None,
                 clock_origin: float | None = None) -> None:
        super().__init__(store, layout)
        self.period = period_seconds
        self._anchor = time.time() if clock_origin is None else clock_origin
        if period_seconds:
            self.resync_seconds = min(self.resync_seconds, period_seconds / 4)

    def now(self) -> dt.datetime:
        return self.clock(dt.datetime.fromtimestamp(time.time(), dt.timezone.utc))

    def clock(self, real: dt.datetime) -> dt.datetime:
        """A real time on the controller's clock (compressed with --cron-period-seconds)."""
        return compressed_clock(real.timestamp(), self._anchor, self.period) if self.period else real

    async def reconcile(self) -> None:
        cronjobs, _ = await self.store.list("cronjobs.batch")
        if not cronjobs:
            return
        jobs, _ = await self.store.list("jobs.batch")
        for cj in cronjobs:
            if not cj["metadata"].get("deletionTimestamp"):
                await self.sync(cj, owned_by(jobs, cj))

    async def sync(self, cj: Json, jobs: list[Json]) -> None:
        ns, name = cj["metadata"]["namespace"], cj["metadata"]["name"]
        spec = cj.get("spec") or {}
        status = cj.get("status") or {}
        active = [j for j in jobs if not _finished(j) and not j["metadata"].get("deletionTimestamp")]
        last_success = _parse_time(status.get("lastSuccessfulTime"))
        for job in jobs:
            if _finished(job) == "Complete":
                done = _parse_time((job.get("status") or {}).get("completionTime"))
                if done and (last_success is None or done > last_success):
                    last_success = done
                    await self.store.record_event(cj, "Normal", "SawCompletedJob",
                                                  f"Saw completed job: {job['metadata']['name']}, "
                                                  "condition: Complete", COMPONENT)
        scheduled = await self._due(cj, spec, status, active)
        if scheduled is not None:
            if spec.get("concurrencyPolicy") == "Replace":
                for job in active:
                    await self._delete(cj, job)
                active = []
            job = await self._create(cj, scheduled)
            if job is not None:
                active.append(job)
        await self._history(cj, spec, jobs)

        def edit(o: Json) -> Json | None:
            st = dict(o.get("status") or {})
            refs = [{"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"], "namespace": ns,
                     "resourceVersion": j["metadata"].get("resourceVersion", ""), "uid": j["metadata"]["uid"]}
                    for j in sorted(active, key=lambda j: j["metadata"]["name"])]
            if refs:
                st["active"] = refs
            else:
                st.pop("active", None)
            if scheduled is not None:
                st["lastScheduleTime"] = _rfc3339(scheduled)
            if last_success is not None:
                st["lastSuccessfulTime"] = _rfc3339(last_success)
            if st == (o.get("status") or {}):
                return None
            o["status"] = st
            return o

        await self.store.mutate("cronjobs.batch", ns, name, edit, subresource="status")

    async def _due(self, cj: Json, spec: Json, status: Json, active: list[Json]) -> dt.datetime | None:
        """The activation to start now, if any (getRecentUnmetScheduleTimes + the policy checks)."""
        if spec.get("suspend"):
            return None
        try:
            zone: dt.tzinfo = zoneinfo.ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else dt.timezone.utc
            schedule = cron.parse(spec.get("schedule", ""))
        except (cron.CronError, zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            await self._warn(cj, "UnparseableSchedule", f"unparseable schedule: {spec.get('schedule')!r} : {e}")
            return None
        now = self.now()
        earliest = _parse_time(status.get("lastScheduleTime"))
        if earliest is None:
            created = _parse_time(cj["metadata"]["creationTimestamp"])
            assert created is not None
            # On the compressed clock a CronJob older than the server "exists" from the server's start.
            earliest = self.clock(max(created, dt.datetime.fromtimestamp(self._anchor, dt.timezone.utc)))
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - dt.timedelta(seconds=int(deadline)))
        missed = 0
        latest: dt.datetime | None = None
        for t in schedule.times(earliest.astimezone(zone), now.astimezone(zone)):
            missed += 1
            latest = t
        if latest is None:
            return None
        if missed > TOO_MANY_MISSED:
            await self._warn(cj, "TooManyMissedTimes",
                             "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or "
                             "check clock skew")
        if deadline is not None and latest + dt.timedelta(seconds=int(deadline)) < now:
            await self._warn(cj, "MissSchedule", f"Missed scheduled time to start a job: {_rfc3339(latest)}")
            return None
        if spec.get("concurrencyPolicy") == "Forbid" and active:
            # The controller requeues until the active Job is done; the activation stays unmet meanwhile.
            return None
        return latest.astimezone(dt.timezone.utc)

    async def _create(self, cj: Json, scheduled: dt.datetime) -> Json | None:
        ns, name = cj["metadata"]["namespace"], cj["metadata"]["name"]
        template = (cj.get("spec") or {}).get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        zone_name = (cj.get("spec") or {}).get("timeZone")
        zone: dt.tzinfo = zoneinfo.ZoneInfo(zone_name) if zone_name else dt.timezone.utc
        job: Json = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": f"{name}-{int(scheduled.timestamp()) // 60}", "namespace": ns,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": {**(tmeta.get("annotations") or {}),
                                SCHEDULED_ANNOTATION: scheduled.astimezone(zone).isoformat()},
                "ownerReferences": [controller_ref(cj)],
            },
            "spec": dict(template.get("spec") or {}),
        }
        try:
            created: Json = await self.store.create("jobs.batch", job)
        except ApiError as exc:
            if exc.code != 409:
                await self._warn(cj, "FailedCreate", f"Error creating job: {exc.message}")
                raise
            return None  # created on an earlier pass whose status update did not land
        await self.store.record_event(cj, "Normal", "SuccessfulCreate",
                                      f"Created job {created['metadata']['name']}", COMPONENT)
        return created

    async def _delete(self, cj: Json, job: Json) -> None:
        try:
            await self.store.delete("jobs.batch", job["metadata"]["namespace"], job["metadata"]["name"],
                                    propagation="Background")
        except ApiError as exc:
            if exc.code != 404:
                raise
            return
        await self.store.record_event(cj, "Normal", "SuccessfulDelete",
                                      f"Deleted job {job['metadata']['name']}", COMPONENT)

    async def _history(self, cj: Json, spec: Json, jobs: list[Json]) -> None:
        for kind, key, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                   ("Failed", "failedJobsHistoryLimit", 1)):
            limit = spec.get(key, default)
            if limit is None:
                continue
            done = sorted((j for j in jobs if _finished(j) == kind and not j["metadata"].get("deletionTimestamp")),
                          key=lambda j: ((j.get("status") or {}).get("startTime") or "", j["metadata"]["name"]))
            for job in done[: max(len(done) - int(limit), 0)]:
                await self._delete(cj, job)

    async def _warn(self, cj: Json, reason: str, message: str) -> None:
        await self.store.record_event(cj, "Warning", reason, message, COMPONENT)
