"""The replica record on a workload: what a scale-down patch writes and what a restore puts back."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from kubectl_dr.workloads.records import (
    ANNOTATIONS,
    ORIGINAL_REPLICAS,
    REASON,
    SCALED_DOWN_AT,
    SCALED_DOWN_BY,
    RecordError,
    read_record,
    restore_plan,
    scale_down_patch,
)
from kubectl_dr.workloads.scaling import parse_workload

Json = dict[str, Any]
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def workload(replicas: int, annotations: dict[str, str] | None = None, rv: str = "41") -> Json:
    return {"kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": rv,
                         "annotations": {"keep": "me", **(annotations or {})}},
            "spec": {"replicas": replicas}}


def apply_merge(target: Any, patch: Any) -> Any:
    """RFC 7386, to see the object a patch leads to."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge(result.get(key), value)
    return result


def test_scale_down_patch_records_and_zeroes_in_one_pinned_patch() -> None:
    patch, original = scale_down_patch(workload(3), run_id="run-1", reason="restore data-db-0", now=NOW)
    assert original == 3
    assert patch["metadata"]["resourceVersion"] == "41"
    assert patch["spec"] == {"replicas": 0}
    assert patch["metadata"]["annotations"] == {
        ORIGINAL_REPLICAS: "3", SCALED_DOWN_BY: "run-1", SCALED_DOWN_AT: "2025-03-04T05:06:07Z",
        REASON: "restore data-db-0"}
    after = apply_merge(workload(3), patch)
    assert after["metadata"]["annotations"]["keep"] == "me"


def test_rerun_keeps_the_original_count_of_an_interrupted_run() -> None:
    interrupted = workload(0, {ORIGINAL_REPLICAS: "3", SCALED_DOWN_BY: "run-1"})
    patch, original = scale_down_patch(interrupted, run_id="run-2", reason="again", now=NOW)
    assert original == 3
    assert patch["metadata"]["annotations"][ORIGINAL_REPLICAS] == "3"
    assert patch["metadata"]["annotations"][SCALED_DOWN_BY] == "run-2"


def test_restore_puts_the_recorded_replicas_back_and_removes_every_annotation() -> None:
    scaled = workload(0, {ORIGINAL_REPLICAS: "3", SCALED_DOWN_BY: "run-1", SCALED_DOWN_AT: "x", REASON: "y"})
    plan = restore_plan(scaled)
    assert plan is not None and plan.action == "restored" and plan.replicas == 3
    assert plan.patch["metadata"]["resourceVersion"] == "41"
    after = apply_merge(scaled, plan.patch)
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["annotations"] == {"keep": "me"}
    assert not set(ANNOTATIONS) & set(after["metadata"]["annotations"])


def test_restore_leaves_replicas_someone_changed_since() -> None:
    changed = workload(5, {ORIGINAL_REPLICAS: "3", SCALED_DOWN_BY: "run-1"})
    plan = restore_plan(changed)
    assert plan is not None and plan.action == "kept" and plan.replicas == 5
    assert "spec" not in plan.patch
    assert "left at 5" in plan.message and "3" in plan.message


def test_restore_only_touches_records_of_the_given_run_and_ignores_unrecorded() -> None:
    scaled = workload(0, {ORIGINAL_REPLICAS: "2", SCALED_DOWN_BY: "run-1"})
    assert restore_plan(scaled, run_id="run-2") is None
    assert restore_plan(scaled, run_id="run-1") is not None
    assert restore_plan(workload(0)) is None


def test_a_hand_edited_record_is_an_error_not_a_guess() -> None:
    with pytest.raises(RecordError, match="not a replica count"):
        read_record(workload(0, {ORIGINAL_REPLICAS: "three"}))


def test_workload_arguments() -> None:
    assert parse_workload("web") == (None, "web")
    assert parse_workload("deploy/web") == ("Deployment", "web")
    assert parse_workload("statefulsets.apps/db") == ("StatefulSet", "db")
    assert parse_workload("sts/db") == ("StatefulSet", "db")
    with pytest.raises(Exception, match="KIND/NAME"):
        parse_workload("daemonset/agent")
