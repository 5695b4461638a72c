"""After a kubelet restart, Ready counts only by a heartbeat of the new kubelet."""

from __future__ import annotations

from datetime import datetime, timezone

from kubectl_dr.nodes.kubelet_restart import ready_since

STARTED = datetime(2026, 12, 7, 21, 0, 5, tzinfo=timezone.utc)  # the new "Starting kubelet." event


def ready(beat: str | None, status: str = "True") -> dict[str, str]:
    condition = {"type": "Ready", "status": status}
    return {**condition, "lastHeartbeatTime": beat} if beat else condition


def test_the_old_kubelets_ready_does_not_count() -> None:
    # The Node object keeps the stopped kubelet's last Ready: a heartbeat from before the new one started.
    assert not ready_since(ready("2026-12-07T21:00:01Z"), STARTED)


def test_a_heartbeat_from_the_new_kubelet_counts() -> None:
    assert ready_since(ready("2026-12-07T21:00:05Z"), STARTED)  # the same second (both times to the second)
    assert ready_since(ready("2026-12-07T21:00:09Z"), STARTED)
    assert not ready_since(ready("2026-12-07T21:00:09Z", "False"), STARTED)


def test_without_the_times_ready_alone_decides() -> None:
    assert ready_since(ready(None), STARTED) and ready_since(ready("2026-12-07T21:00:01Z"), None)
    assert not ready_since({"type": "MemoryPressure", "status": "True"}, None)
