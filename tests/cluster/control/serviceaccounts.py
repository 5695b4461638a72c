"""ServiceAccounts controller (pkg/controller/serviceaccount): a ``default`` ServiceAccount in every active namespace.

The API server already writes it with the namespace (see Store._default_service_account); this loop is the
controller's other half: one deleted is made again, as on a real cluster.
"""

from __future__ import annotations

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller

DEFAULT = "default"


class ServiceAccountsController(Controller):
    name = "serviceaccount-controller"
    watches = ("namespaces", "serviceaccounts")

    async def reconcile(self) -> None:
        namespaces, _ = await self.store.list("namespaces")
        accounts, _ = await self.store.list("serviceaccounts", field_selector=f"metadata.name={DEFAULT}")
        have = {a["metadata"]["namespace"] for a in accounts}
        for ns in namespaces:
            name = ns["metadata"]["name"]
            # Only active namespaces, as the real controller: a terminating one is being emptied.
            if name in have or (ns.get("status") or {}).get("phase", "Active") != "Active" \
                    or ns["metadata"].get("deletionTimestamp"):
                continue
            try:
                await self.store.create("serviceaccounts", {"metadata": {"name": DEFAULT, "namespace": name}})
            except ApiError as exc:
                if exc.code not in (403, 404, 409):  # terminating or gone meanwhile, or made by the server
                    raise
