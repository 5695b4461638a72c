"""Garbage collector: follows ownerReferences (pkg/controller/garbagecollector, simplified).

- dependents whose owners are all gone are deleted (background propagation);
- an owner being deleted with the `foregroundDeletion` finalizer waits until its blocking dependents
  are gone, then loses the finalizer (and with it the object);
- an owner being deleted with the `orphan` finalizer has its references removed from dependents first.
Only the kinds in KIND_RESOURCES are followed; references to other kinds are left alone, as the real GC
leaves references it cannot resolve.
"""

from __future__ import annotations

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import KIND_RESOURCES, Json, drop_owner, is_terminating

DEPENDENT_RESOURCES = ("pods", "replicasets.apps", "controllerrevisions.apps", "jobs.batch",
                       "persistentvolumeclaims", "statefulsets.apps", "deployments.apps", "daemonsets.apps",
                       "endpointslices.discovery.k8s.io")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def _key(obj: Json) -> tuple[str, str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"], obj["metadata"]["uid"])


class GarbageCollector(Controller):
    name = "garbage-collector-controller"
    watches = ("replicasets.apps", "deployments.apps", "statefulsets.apps", "daemonsets.apps", "jobs.batch",
               "nodes", "services")
    resync_seconds = 3.0

    async def reconcile(self) -> None:
        # Dependents first: an owner always exists before its dependents, so any dependent listed here
        # whose owner is missing from the (later) owner lists really has lost it.
        dependents: dict[str, list[Json]] = {}
        for res in DEPENDENT_RESOURCES:
            dependents[res], _ = await self.store.list(res)
        owners: dict[str, Json] = {}
        owner_kinds: dict[str, str] = {}
        for (_api, _kind), res in KIND_RESOURCES.items():
            items = dependents.get(res)
            if items is None:
                items, _ = await self.store.list(res)
            for o in items:
                owners[o["metadata"]["uid"]] = o
                owner_kinds[o["metadata"]["uid"]] = res
        # A dependent whose owners are absent from the lists is checked once more by name before it
        # goes (_all_gone): the lists are not one snapshot.
        for res, items in dependents.items():
            for dep in items:
                refs = [r for r in dep["metadata"].get("ownerReferences") or []
                        if (r.get("apiVersion"), r.get("kind")) in KIND_RESOURCES]
                if not refs or is_terminating(dep):
                    continue
                if all(r.get("uid") not in owners for r in refs) and await self._all_gone(dep, refs):
                    await self._delete(res, dep, "Background")

        for uid, owner in owners.items():
            if not is_terminating(owner):
                continue
            finalizers = owner["metadata"].get("finalizers") or []
            res = owner_kinds[uid]
            if ORPHAN in finalizers:
                await self._orphan(owner, dependents)
                await self._drop_finalizer(res, owner, ORPHAN)
            elif FOREGROUND in finalizers:
                blocking = [(r, d) for r, items in dependents.items() for d in items
                            if any(ref.get("uid") == uid for ref in d["metadata"].get("ownerReferences") or [])]
                for r, d in blocking:
                    if not is_terminating(d):
                        await self._delete(r, d, "Foreground")
                if not blocking:
                    await self._drop_finalizer(res, owner, FOREGROUND)

    async def _all_gone(self, dep: Json, refs: list[Json]) -> bool:
        """Check each owner by name with a fresh read (the lists above are not one snapshot)."""
        for ref in refs:
            res = KIND_RESOURCES[(ref["apiVersion"], ref["kind"])]
            namespaced = self.store.resource(res).namespaced
            try:
                owner = await self.store.get(res, dep["metadata"].get("namespace") if namespaced else None,
                                             ref["name"])
            except ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            if owner["metadata"].get("uid") == ref.get("uid"):
                return False
        return True

    async def _delete(self, res: str, obj: Json, propagation: str) -> None:
        ns, name, _ = _key(obj)
        try:
            await self.store.delete(res, ns or None, name, propagation=propagation,
                                    preconditions={"uid": obj["metadata"]["uid"]})
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    async def _orphan(self, owner: Json, dependents: dict[str, list[Json]]) -> None:
        uid = owner["metadata"]["uid"]
        for res, items in dependents.items():
            for dep in items:
                if not any(r.get("uid") == uid for r in dep["metadata"].get("ownerReferences") or []):
                    continue

                def drop(o: Json) -> Json | None:
                    return o if drop_owner(o, uid) else None

                ns, name, _ = _key(dep)
                try:
                    await self.store.mutate(res, ns or None, name, drop)
                except ApiError as exc:
                    if exc.code != 404:
                        raise

    async def _drop_finalizer(self, res: str, owner: Json, finalizer: str) -> None:
        def drop(o: Json) -> Json | None:
            fins = o["metadata"].get("finalizers") or []
            if finalizer not in fins:
                return None
            o["metadata"]["finalizers"] = [f for f in fins if f != finalizer]
            return o

        ns, name, _ = _key(owner)
        try:
            await self.store.mutate(res, ns or None, name, drop)
        except ApiError as exc:
            if exc.code != 404:
                raise
