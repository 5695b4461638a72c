"""Owner-reference adoption by label selector (pkg/controller/controller_ref_manager.go, ClaimObjects).

A controller claims the objects of its namespace:
- an object whose controller reference is this owner stays claimed while the selector matches it; when its
  labels stop matching it is released (the reference removed), unless the owner is being deleted;
- an object with no controller reference that the selector matches, and that is not being deleted, is adopted
  (a controller reference with ``controller: true`` and ``blockOwnerDeletion: true`` added), unless the owner
  is being deleted; before the first adoption the owner is read again, as ``RecheckDeletionTimestamp`` does, so
  a controller never adopts for an owner that was just deleted or replaced;
- an object another controller owns is left alone.
This is what lets objects created without ownerReferences (a namespace restore, `kubectl apply` of pods with
matching labels) be taken over by their ReplicaSet, Deployment or StatefulSet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.objects import Json, controller_of, controller_ref, drop_owner, is_terminating, uid


class OwnerGone(Exception):
    """The owner was deleted or replaced since it was listed: adopt nothing for it."""


async def claim(store: Any, resource: str, owner: Json, candidates: list[Json],
                match: Callable[[Json], bool], owner_resource: str) -> list[Json]:
    """The objects of ``candidates`` (same namespace as ``owner``) that ``owner`` controls after claiming."""
    claimed: list[Json] = []
    checked = False
    for obj in candidates:
        ref = controller_of(obj)
        if ref is not None:
            if ref.get("uid") != uid(owner):
                continue
            if match(obj):
                claimed.append(obj)
            elif not is_terminating(owner):
                await _release(store, resource, owner, obj)
            continue
        if is_terminating(owner) or is_terminating(obj) or not match(obj):
            continue
        if not checked:
            if not await _still_there(store, owner_resource, owner):
                return claimed
            checked = True
        adopted = await _adopt(store, resource, owner, obj)
        if adopted is not None:
            claimed.append(adopted)
    return claimed


async def _still_there(store: Any, owner_resource: str, owner: Json) -> bool:
    try:
        fresh = await store.get(owner_resource, owner["metadata"]["namespace"],
                                owner["metadata"]["name"])
    except ApiError as exc:
        if exc.code == 404:
            return False
        raise
    return uid(fresh) == uid(owner) and not is_terminating(fresh)


async def _adopt(store: Any, resource: str, owner: Json, obj: Json) -> Json | None:
    want_uid = uid(obj)

    def edit(o: Json) -> Json | None:
        if uid(o) != want_uid or controller_of(o) is not None or is_terminating(o):
            return None
        o["metadata"].setdefault("ownerReferences", []).append(controller_ref(owner))
        return o

    try:
        updated: Json = await store.mutate(resource, obj["metadata"]["namespace"],
                                           obj["metadata"]["name"], edit)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise
    ref = controller_of(updated)
    return updated if ref is not None and ref.get("uid") == uid(owner) else None


async def _release(store: Any, resource: str, owner: Json, obj: Json) -> None:
    owner_uid, want_uid = uid(owner), uid(obj)

    def edit(o: Json) -> Json | None:
        return o if uid(o) == want_uid and drop_owner(o, owner_uid) else None

    try:
        await store.mutate(resource, obj["metadata"]["namespace"],
                           obj["metadata"]["name"], edit)
    except ApiError as exc:
        # Gone, or being deleted (422): nothing to release, as ReleasePod ignores both.
        if exc.code not in (404, 422):
            raise
