"""ServiceAccount admission (plugin/pkg/admission/serviceaccount): a pod must name a service account that exists.

The defaulting half (``serviceAccountName: default``) is in ``defaults.py``. This is the validating half: a
pod whose service account is missing is refused with the plugin's words (``pods "NAME" is forbidden: error
looking up service account NS/SA: serviceaccount "SA" not found``). As the real plugin, the lookup of
``default`` is tried ten times 100-200 ms apart, since the serviceaccounts controller makes it a moment after
the namespace; any other name is looked up once. Mirror pods are not checked (the real plugin only refuses
mirror pods that name a service account, which the kubelet never sends).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from tests.cluster.api import errors

if TYPE_CHECKING:
    from tests.cluster.api.resources import Resource
    from tests.cluster.api.store import Store

Json = dict[str, Any]
DEFAULT = "default"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_DEFAULT_ATTEMPTS = 10


async def service_account_exists(store: Store, namespace: str, name: str) -> bool:
    attempts = _DEFAULT_ATTEMPTS if name == DEFAULT else 1
    interval = random.uniform(0.1, 0.2)  # one interval for all retries, as the plugin draws it once
    for i in range(attempts):
        if i:
            await asyncio.sleep(interval)
        try:
            await store.get("serviceaccounts", namespace, name)
            return True
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
    return False


async def service_account_admission(store: Store, res: Resource, operation: str, obj: Json, old: Json | None,
                                    warnings: list[str]) -> None:
    if res.key != "pods" or operation != "CREATE":
        return
    meta = obj.get("metadata") or {}
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return
    namespace = meta.get("namespace") or "default"
    account = (obj.get("spec") or {}).get("serviceAccountName") or DEFAULT
    if not await service_account_exists(store, namespace, account):
        # admission.NewForbidden names an object that has only a generateName by that prefix.
        raise errors.forbidden(res.plural, res.group, meta.get("name") or meta.get("generateName"),
                               f'error looking up service account {namespace}/{account}: '
                               f'serviceaccount "{account}" not found')
