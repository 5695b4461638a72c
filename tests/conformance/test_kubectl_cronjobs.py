"""The CronJob controller as real kubectl sees it, on a cluster whose CronJob clock runs fast (one cron minute
lasts two seconds: `cron_period_seconds=2`): Jobs on schedule named NAME-<scheduled minutes>, status
lastScheduleTime/lastSuccessfulTime, history limits, concurrencyPolicy Forbid and Replace, suspend, and no
pile-up of missed activations."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.fixture import Cluster, ClusterFactory
from tests.conformance.kube import BUSYBOX, events_for, get_json, manifest
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
VERSION = "1.33"
PERIOD = 2.0


@pytest.fixture(scope="module")
def fast(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    c = cluster_factory(control_planes=1, workers=1, cron_period_seconds=PERIOD)
    c.kubectl("create", "namespace", "cron", version=VERSION)
    yield c
    c.kubectl("delete", "namespace", "cron", "--wait=false", version=VERSION, check=False)


def cronjob(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": "cron"},
            "spec": {"schedule": "* * * * *", **spec, "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script]}]}}}}}}


def jobs(c: Cluster, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(c, "-n", "cron", "jobs", "-l", f"app={name}", version=VERSION)["items"]
    return sorted(items, key=lambda j: j["metadata"]["name"])


def done(job: dict[str, Any], kind: str = "Complete") -> bool:
    return any(x["type"] == kind and x["status"] == "True" for x in (job.get("status") or {}).get("conditions", []))


def test_jobs_on_schedule_with_names_status_and_history(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        cronjob("tick", "echo tick", successfulJobsHistoryLimit=2)))
    cj = get_json(fast, "-n", "cron", "cronjob", "tick", version=VERSION)
    assert cj["spec"]["concurrencyPolicy"] == "Allow" and cj["spec"]["failedJobsHistoryLimit"] == 1
    template = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["dnsPolicy"] == "ClusterFirst"  # the pod template is defaulted
    events = eventually(lambda: [e for e in events_for(fast, "cron", "tick", version=VERSION)
                                 if e["reason"] == "SuccessfulDelete"], timeout=90,
                        what="a third successful job, and the oldest one deleted")
    assert events[0]["source"]["component"] == "cronjob-controller"
    # The history limit keeps two finished jobs; the next activation's job may be running beside them (a cron
    # minute lasts 2 s here, less than a pod's life on a loaded machine): waiting for a moment with none
    # running waited for a coincidence, not for the limit.
    listed = eventually(lambda: len(js := [j for j in jobs(fast, "tick") if done(j)]) == 2 and js,
                        what="two completed jobs kept")
    assert all(not done(j, "Failed") for j in jobs(fast, "tick"))
    for job in listed:
        minutes = int(job["metadata"]["name"].rsplit("-", 1)[1])
        scheduled = dt.datetime.fromisoformat(job["metadata"]["annotations"][
            "batch.kubernetes.io/cronjob-scheduled-timestamp"])
        assert scheduled.timestamp() == minutes * 60 and scheduled.second == 0
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "tick", True)
        assert job["metadata"]["labels"]["app"] == "tick"
    status = get_json(fast, "-n", "cron", "cronjob", "tick", version=VERSION)["status"]
    # A finished job's activation is in the status (set in the pass that created it); a job listed now may
    # have been created after the status was read.
    newest = max(int(j["metadata"]["name"].rsplit("-", 1)[1]) for j in listed)
    last = dt.datetime.strptime(status["lastScheduleTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert int(last.timestamp()) // 60 >= newest
    assert status["lastSuccessfulTime"]
    table = fast.kubectl("-n", "cron", "get", "cronjob", "tick", "--no-headers", version=VERSION).stdout.split()
    # NAME SCHEDULE(5 words) TIMEZONE SUSPEND ACTIVE: jobs may be running right now (with a 2 s cron minute
    # and concurrencyPolicy Allow, more than one on a loaded machine).
    assert table[:8] == ["tick", "*", "*", "*", "*", "*", "<none>", "False"] and table[8].isdigit()


def test_failed_history_limit(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(cronjob("fails", "exit 1")))
    eventually(lambda: any(e["reason"] == "SuccessfulDelete" for e in events_for(fast, "cron", "fails",
                                                                                   version=VERSION)),
               timeout=90, what="a second failed job, and the older one deleted")
    eventually(lambda: len([j for j in jobs(fast, "fails") if done(j, "Failed")]) == 1,
               what="one failed job kept")
    fast.kubectl("-n", "cron", "delete", "cronjob", "fails", version=VERSION)


def test_forbid_keeps_one_job(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        cronjob("forbid", "sleep 3600", concurrencyPolicy="Forbid")))
    first = eventually(lambda: jobs(fast, "forbid"), what="the first job")
    time.sleep(4 * PERIOD)  # four more activations: all skipped while the first job runs
    assert [j["metadata"]["name"] for j in jobs(fast, "forbid")] == [first[0]["metadata"]["name"]]
    active = get_json(fast, "-n", "cron", "cronjob", "forbid", version=VERSION)["status"]["active"]
    assert [a["name"] for a in active] == [first[0]["metadata"]["name"]]
    fast.kubectl("-n", "cron", "delete", "cronjob", "forbid", version=VERSION)


def test_replace_replaces_the_running_job(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        cronjob("replace", "sleep 3600", concurrencyPolicy="Replace")))
    first = eventually(lambda: jobs(fast, "replace"), what="the first job")[0]["metadata"]["name"]
    eventually(lambda: any(j["metadata"]["name"] != first for j in jobs(fast, "replace")),
               what="a replacement job")
    eventually(lambda: first not in [j["metadata"]["name"] for j in jobs(fast, "replace")],
               what="the replaced job to be deleted")
    deleted = [e for e in events_for(fast, "cron", "replace", version=VERSION) if e["reason"] == "SuccessfulDelete"]
    # Under load the replacement may itself have been replaced by now: one of the deletions is the first's.
    assert f"Deleted job {first}" in [e["message"] for e in deleted]
    fast.kubectl("-n", "cron", "delete", "cronjob", "replace", version=VERSION)


def test_suspend_and_no_pile_up(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        cronjob("held", "echo held", suspend=True, startingDeadlineSeconds=120, successfulJobsHistoryLimit=10)))
    time.sleep(4 * PERIOD)
    assert jobs(fast, "held") == []
    # The last activation missed while suspended: at or before this moment of the controller's clock.
    last_missed = int(fast.cron_clock().timestamp()) // 60
    fast.kubectl("-n", "cron", "patch", "cronjob", "held", "-p", '{"spec":{"suspend":false}}', version=VERSION)
    # Four activations were missed while suspended: only the most recent one runs (or, if the controller
    # first looks after the next activation, none of them). Activations after the resume start on schedule,
    # and with a 2 s cron minute a kubectl slower than that (a loaded machine) lists them too: what tells a
    # pile-up is a job for an activation older than the last missed one, not the number listed.
    listed = eventually(lambda: jobs(fast, "held"), what="a job after the CronJob is resumed")
    scheduled = sorted(int(j["metadata"]["name"].rsplit("-", 1)[1]) for j in listed)
    assert scheduled[0] >= last_missed, (scheduled, last_missed)
    # One job per activation since: consecutive cron minutes.
    assert scheduled == list(range(scheduled[0], scheduled[0] + len(scheduled))), scheduled
    fast.kubectl("-n", "cron", "delete", "cronjob", "held", version=VERSION)


def test_time_zone(fast: Cluster) -> None:
    fast.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        cronjob("zoned", "echo zoned", timeZone="Europe/Zurich", schedule="*/1 * * * *")))
    eventually(lambda: jobs(fast, "zoned"), what="a job of a CronJob with a time zone")
    job = jobs(fast, "zoned")[0]
    scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert scheduled.endswith(("+01:00", "+02:00"))  # written in the CronJob's zone, as the controller does
    fast.kubectl("-n", "cron", "delete", "cronjob", "zoned", version=VERSION)
