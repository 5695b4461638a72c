"""Namespace controller: empties a Terminating namespace, then removes it (pkg/controller/namespace)."""

from __future__ import annotations

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller
from tests.cluster.control.objects import Json, is_terminating, set_condition


class NamespaceController(Controller):
    name = "namespace-controller"
    watches = ("namespaces",)
    resync_seconds = 2.0

    async def reconcile(self) -> None:
        namespaces, _ = await self.store.list("namespaces")
        for ns in namespaces:
            if is_terminating(ns):
                await self.sync(ns)

    def _resources(self) -> list[str]:
        return [key for key, res in self.store.registry.by_key.items()
                if res.namespaced and "list" in res.verbs and "delete" in res.verbs]

    async def sync(self, ns: Json) -> None:
        name = ns["metadata"]["name"]
        remaining: dict[str, int] = {}
        for res in self._resources():
            items, _ = await self.store.list(res, name)
            for item in items:
                remaining[res] = remaining.get(res, 0) + 1
                if is_terminating(item):
                    continue  # graceful pod deletion or finalizers in progress
                try:
                    await self.store.delete(res, name, item["metadata"]["name"], propagation="Background")
                except ApiError as exc:
                    if exc.code != 404:
                        raise
        if remaining:
            left = ", ".join(f"{r.split('.')[0]} has {n} resource instances" for r, n in sorted(remaining.items()))

            def edit(o: Json) -> Json | None:
                st = o.setdefault("status", {})
                before = [dict(c) for c in st.get("conditions") or []]
                set_condition(st, "NamespaceContentRemaining", "True", "SomeResourcesRemain",
                              f"Some resources are remaining: {left}")
                if [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in st["conditions"]] == [
                        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in before]:
                    return None
                return o

            try:
                await self.store.mutate("namespaces", None, name, edit, subresource="status")
            except ApiError as exc:
                if exc.code != 404:
                    raise
            return
        try:
            await self.store.delete("namespaces", None, name, grace_period_seconds=0)
        except ApiError as exc:
            if exc.code != 404:
                raise
