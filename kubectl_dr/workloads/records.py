"""The record kubectl dr leaves on a workload it scaled down, and the patches that write and remove it.

The record lives on the workload itself (annotations), not on the user's machine: whoever runs
`kubectl dr scale restore` later, from any laptop, after any crash, finds what to put back. Each patch
carries the resourceVersion it was computed from, so a concurrent change makes the server answer 409
instead of our write silently replacing someone else's (or recording a replica count that was never
the original). Pure functions on plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.workloads.specs import Json

PREFIX = "kubectl-dr.io/"
ORIGINAL_REPLICAS = PREFIX + "original-replicas"
SCALED_DOWN_BY = PREFIX + "scaled-down-by"
SCALED_DOWN_AT = PREFIX + "scaled-down-at"
REASON = PREFIX + "reason"
ANNOTATIONS = (ORIGINAL_REPLICAS, SCALED_DOWN_BY, SCALED_DOWN_AT, REASON)


@dataclass(frozen=True)
class Record:
    original_replicas: int
    run_id: str
    at: str
    reason: str


class RecordError(DrError):
    """A record that cannot be trusted (e.g. a hand-edited replica count that is not a number)."""


def rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(obj: Json) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')}/{meta.get('name', '?')} in namespace {meta.get('namespace', '?')}"


def read_record(obj: Json) -> Record | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if ORIGINAL_REPLICAS not in annotations:
        return None
    text = str(annotations[ORIGINAL_REPLICAS]).strip()
    if not text.isdigit():
        raise RecordError(
            f"{describe(obj)} has annotation {ORIGINAL_REPLICAS}={text!r}, which is not a replica count",
            hint=f"Set spec.replicas by hand, then remove the {PREFIX}* annotations.")
    return Record(int(text), str(annotations.get(SCALED_DOWN_BY, "")), str(annotations.get(SCALED_DOWN_AT, "")),
                  str(annotations.get(REASON, "")))


def replicas_of(obj: Json) -> int:
    # The API server defaults spec.replicas to 1 for every scalable kind; absent only in hand-made dicts.
    return int((obj.get("spec") or {}).get("replicas", 1))


def scale_down_patch(obj: Json, *, run_id: str, reason: str, now: datetime | None = None) -> tuple[Json, int]:
    """A merge patch that records the replicas and sets them to 0, and the replica count it records.

    An object that already carries a record (an earlier run was interrupted, and left it at 0) keeps
    its recorded count: recording the current 0 would lose the real original for good. The run that
    patches it takes the record over, so its own restore puts the original back.
    """
    existing = read_record(obj)
    original = existing.original_replicas if existing else replicas_of(obj)
    patch: Json = {
        "metadata": {
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "annotations": {
                ORIGINAL_REPLICAS: str(original),
                SCALED_DOWN_BY: run_id,
                SCALED_DOWN_AT: rfc3339(now),
                REASON: reason,
            },
        },
        "spec": {"replicas": 0},
    }
    return patch, original


@dataclass(frozen=True)
class RestorePlan:
    patch: Json
    record: Record
    # What spec.replicas will be after the patch.
    replicas: int
    # "restored": replicas set back to the record; "kept": someone changed the replicas since, they are
    # left as that person set them and only the record is removed.
    action: str
    message: str
    would: str = ""  # the message as a dry run says it: what would happen


def restore_plan(obj: Json, *, run_id: str | None = None) -> RestorePlan | None:
    """The patch that puts a recorded workload back, or None if there is no record (of this run).

    A workload whose replicas are no longer 0 was scaled by someone after us (an operator bringing
    the app back by hand, say): their decision is newer than our record, so it stands; the record is
    removed so it cannot overwrite them later.
    """
    record = read_record(obj)
    if record is None or (run_id is not None and record.run_id != run_id):
        return None
    current = replicas_of(obj)
    metadata: dict[str, Any] = {
        "resourceVersion": obj["metadata"]["resourceVersion"],
        "annotations": dict.fromkeys(ANNOTATIONS),  # null removes a key in a merge patch
    }
    if current == 0:
        return RestorePlan({"metadata": metadata, "spec": {"replicas": record.original_replicas}}, record,
                           record.original_replicas, "restored",
                           f"replicas set back to {record.original_replicas}",
                           f"replicas would be set back to {record.original_replicas}")
    changed = f"replicas were changed to {current} after kubectl dr scaled it down"
    return RestorePlan({"metadata": metadata}, record, current, "kept",
                       f"{changed}; left at {current} (recorded original: {record.original_replicas}), record removed",
                       f"{changed}; would be left at {current} (recorded original: {record.original_replicas}), "
                       "record would be removed")
