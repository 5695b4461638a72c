"""Pod spec.activeDeadlineSeconds, as real kubectl sees it: the kubelet fails the pod (DeadlineExceeded, the
real message) and kills its containers, also when the deadline is lowered on a running pod."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cluster.fixture import Cluster
from tests.conformance.kube import events_for, get_json, manifest, pod
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
VERSION = "1.33"
MESSAGE = "Pod was active on the node longer than the specified deadline"


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = "deadline"
    cluster.kubectl("create", "namespace", name, version=VERSION)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", version=VERSION, check=False)


def failed(cluster: Cluster, ns: str, name: str) -> dict[str, object] | None:
    status = get_json(cluster, "-n", ns, "pod", name, version=VERSION)["status"]
    return status if status["phase"] == "Failed" and status["containerStatuses"][0]["state"].get("terminated") \
        else None


def test_deadline_fails_and_kills_the_pod(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        pod("short", ns, command=["sh", "-c", "echo started; sleep 3600"], activeDeadlineSeconds=3)))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/short", "--timeout=60s", version=VERSION)
    status = eventually(lambda: failed(cluster, ns, "short"), what="the pod to fail on its deadline")
    assert status["reason"] == "DeadlineExceeded" and status["message"] == MESSAGE
    state = status["containerStatuses"][0]  # type: ignore[index]
    assert state["state"]["terminated"]["exitCode"] in (137, 143) and state["ready"] is False
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")  # type: ignore[attr-defined]
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")
    events = {e["reason"]: e for e in events_for(cluster, ns, "short", version=VERSION)}
    assert events["DeadlineExceeded"]["type"] == "Normal" and events["DeadlineExceeded"]["message"] == MESSAGE
    assert events["DeadlineExceeded"]["source"]["component"] == "kubelet"
    # The logs stay readable after the kill, as on a real node.
    assert cluster.kubectl("-n", ns, "logs", "short", version=VERSION).stdout == "started\n"


def test_lowered_deadline_on_a_running_pod(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "-f", "-", version=VERSION, input=manifest(
        pod("long", ns, command=["sleep", "3600"], activeDeadlineSeconds=3600)))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/long", "--timeout=60s", version=VERSION)
    cluster.kubectl("-n", ns, "patch", "pod", "long", "-p", json.dumps({"spec": {"activeDeadlineSeconds": 1}}),
                    version=VERSION)
    status = eventually(lambda: failed(cluster, ns, "long"), what="the pod to fail on its lowered deadline")
    assert status["reason"] == "DeadlineExceeded"
