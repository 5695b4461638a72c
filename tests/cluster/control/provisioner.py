"""PersistentVolume controller and the two provisioners of the loopback cluster.

Binding follows pkg/controller/volume/persistentvolume: a Pending claim with a class is provisioned
as a PV named pvc-<claim uid>; claims naming a pre-bound or matching static PV are bound to it; a claim
whose class does not exist stays Pending with a ProvisioningFailed event. When a claim goes, its PV is
Released and, with reclaimPolicy Delete, removed together with its directory.

- `standard` (default class, Immediate binding, provisioner kubectl-dr.io/loopback-hostpath): hostPath
  DIR/storage/pv-<claim uid>, a network-attached style volume reachable from every node;
- `local-path` (WaitForFirstConsumer, provisioner rancher.io/local-path, as k3s and kind ship it): the
  claim stays Pending ("waiting for first consumer") until the scheduler picks a node for a pod that uses
  it and writes the `volume.kubernetes.io/selected-node` annotation; the provisioner then creates a
  hostPath PV on that node's host filesystem (/opt/local-path-provisioner/pvc-<uid>_<ns>_<name>, i.e.
  DIR/nodes/NODE/opt/…) with a required nodeAffinity for the node, so later pods of the claim can only
  run there.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from tests.cluster.api.errors import ApiError
from tests.cluster.control.base import Controller
from tests.cluster.control.layout import Layout
from tests.cluster.control.objects import Json, is_terminating

PROVISIONER = "kubectl-dr.io/loopback-hostpath"
LOCAL_PATH_PROVISIONER = "rancher.io/local-path"
LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_DIR = "/opt/local-path-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
COMPONENT = "persistentvolume-controller"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
RETRY_EVENT_SECONDS = 15.0

UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(q: str | int | None) -> float:
    if q is None:
        return 0.0
    s = str(q)
    for unit, factor in sorted(UNITS.items(), key=lambda u: -len(u[0])):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * factor
    return float(s)


def default_storage_class() -> Json:
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }


def local_path_class() -> Json:
    """rancher/local-path-provisioner's class (deploy/local-path-storage.yaml), as kind and k3s install it."""
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS},
        "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


async def ensure_default_class(store: Any) -> None:
    """The StorageClasses `standard` (default) and `local-path`, created once (then kept as users leave them)."""
    for cls in (default_storage_class(), local_path_class()):
        try:
            await store.create("storageclasses.storage.k8s.io", cls)
        except ApiError as exc:
            if exc.code != 409:
                raise


def waits_for_consumer(claim: Json, classes: dict[str, Json]) -> bool:
    """An unbound claim of a WaitForFirstConsumer class: the scheduler, not the PV controller, starts it."""
    cls = classes.get(str((claim.get("spec") or {}).get("storageClassName") or ""))
    return bool(cls and cls.get("volumeBindingMode") == "WaitForFirstConsumer"
                and not (claim.get("spec") or {}).get("volumeName"))


class VolumeController(Controller):
    name = COMPONENT
    watches = ("persistentvolumeclaims", "persistentvolumes", "storageclasses.storage.k8s.io")
    resync_seconds = 5.0

    def __init__(self, store: Any, layout: Layout) -> None:
        super().__init__(store, layout)
        self._failed_event_at: dict[str, float] = {}

    async def reconcile(self) -> None:
        claims, _ = await self.store.list("persistentvolumeclaims")
        pvs, _ = await self.store.list("persistentvolumes")
        classes, _ = await self.store.list("storageclasses.storage.k8s.io")
        by_class = {c["metadata"]["name"]: c for c in classes}
        default = next((c for c in classes
                        if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"), None)
        claim_uids = {c["metadata"]["uid"] for c in claims}
        for claim in claims:
            if not is_terminating(claim) and (claim.get("status") or {}).get("phase") != "Bound":
                await self._sync_claim(claim, pvs, by_class, default)
        for pv in pvs:
            await self._sync_volume(pv, claim_uids)

    async def _sync_claim(self, claim: Json, pvs: list[Json], by_class: dict[str, Json],
                          default: Json | None) -> None:
        ns, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
        spec = claim.get("spec") or {}
        cls_name = spec.get("storageClassName")
        if cls_name is None and default is not None:
            # Retroactive default StorageClass assignment (GA in 1.28).
            default_name = default["metadata"]["name"]

            def assign(o: Json) -> Json | None:
                if o["spec"].get("storageClassName") is not None:
                    return None
                o["spec"]["storageClassName"] = default_name
                return o

            claim = await self.store.mutate("persistentvolumeclaims", ns, name, assign)
            cls_name = default_name
        # Pre-bound (spec.volumeName) or a matching Available static PV.
        pv = self._match(claim, pvs)
        if pv is None and cls_name:
            cls = by_class.get(cls_name)
            if cls is None:
                await self._warn(claim, f'storageclass.storage.k8s.io "{cls_name}" not found')
                return
            provisioner = cls.get("provisioner")
            if provisioner not in (PROVISIONER, LOCAL_PATH_PROVISIONER):
                return  # another provisioner's class: an external provisioner would act, none does here
            node = (claim["metadata"].get("annotations") or {}).get(SELECTED_NODE)
            if cls.get("volumeBindingMode", "Immediate") == "WaitForFirstConsumer" and not node:
                await self._event(claim, "Normal", "WaitForFirstConsumer",
                                  "waiting for first consumer to be created before binding")
                return
            if provisioner == LOCAL_PATH_PROVISIONER:
                if not node:
                    return  # an Immediate class of local-path: the real provisioner cannot pick a node either
                pv = await self._provision_local(claim, cls, node)
            else:
                pv = await self._provision(claim, cls)
        if pv is not None:
            await self._bind(claim, pv)

    def _match(self, claim: Json, pvs: list[Json]) -> Json | None:
        spec = claim.get("spec") or {}
        if spec.get("volumeName"):
            return next((p for p in pvs if p["metadata"]["name"] == spec["volumeName"]), None)
        want = quantity_bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        modes = set(spec.get("accessModes") or [])
        candidates = [
            p for p in pvs
            if (p.get("status") or {}).get("phase") == "Available" and not p["spec"].get("claimRef")
            and (p["spec"].get("storageClassName") or "") == (spec.get("storageClassName") or "")
            and modes <= set(p["spec"].get("accessModes") or [])
            and quantity_bytes((p["spec"].get("capacity") or {}).get("storage")) >= want
        ]
        claimed = [p for p in pvs if ((p["spec"].get("claimRef") or {}).get("uid") == claim["metadata"]["uid"])]
        if claimed:
            return claimed[0]
        return min(candidates, key=lambda p: quantity_bytes(p["spec"]["capacity"]["storage"]), default=None)

    async def _warn(self, claim: Json, message: str) -> None:
        await self._event(claim, "Warning", "ProvisioningFailed", message)

    async def _event(self, claim: Json, kind: str, reason: str, message: str) -> None:
        # The controller repeats these on every resync; a counted event every 15 s says the same.
        key = claim["metadata"]["uid"] + reason
        if time.monotonic() - self._failed_event_at.get(key, -1e9) < RETRY_EVENT_SECONDS:
            return
        self._failed_event_at[key] = time.monotonic()
        await self.store.record_event(claim, kind, reason, message, COMPONENT)

    async def _provision_local(self, claim: Json, cls: Json, node: str) -> Json:
        """rancher/local-path-provisioner: a directory on the selected node, a PV pinned to that node."""
        meta, spec = claim["metadata"], claim["spec"]
        ns, name = meta["namespace"], meta["name"]
        await self.store.record_event(claim, "Normal", "ExternalProvisioning",
                                      "Waiting for a volume to be created either by the external provisioner "
                                      f"'{LOCAL_PATH_PROVISIONER}' or manually by the system administrator. If "
                                      "volume creation is delayed, please verify that the provisioner is running "
                                      "and correctly registered.", COMPONENT)
        await self.store.record_event(claim, "Normal", "Provisioning",
                                      f'External provisioner is provisioning volume for claim "{ns}/{name}"',
                                      f"{LOCAL_PATH_PROVISIONER}_local-path-provisioner")
        pv_name = f"pvc-{meta['uid']}"
        path = f"{LOCAL_PATH_DIR}/{pv_name}_{ns}_{name}"
        host = self.layout.host_path(node, path)
        await asyncio.to_thread(host.mkdir, 0o777, True, True)
        await asyncio.to_thread(host.chmod, 0o777)  # the provisioner's helper pod: mkdir -m 0777
        pv: Json = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name,
                         "annotations": {"local.path.provisioner/selected-node": node,
                                         "pv.kubernetes.io/provisioned-by": LOCAL_PATH_PROVISIONER},
                         "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": name, "namespace": ns,
                             "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")},
                "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy", "Delete"),
                "storageClassName": cls["metadata"]["name"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
            },
        }
        try:
            created = await self.store.create("persistentvolumes", pv)
        except ApiError as exc:
            if exc.code != 409:
                raise
            created = await self.store.get("persistentvolumes", None, pv_name)
        await self.store.record_event(claim, "Normal", "ProvisioningSucceeded",
                                      f"Successfully provisioned volume {pv_name}",
                                      f"{LOCAL_PATH_PROVISIONER}_local-path-provisioner")
        return dict(created)

    async def _provision(self, claim: Json, cls: Json) -> Json:
        uid = claim["metadata"]["uid"]
        path = self.layout.storage / f"pv-{uid}"
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        spec = claim["spec"]
        pv: Json = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{uid}",
                         "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "name": claim["metadata"]["name"], "namespace": claim["metadata"]["namespace"],
                             "uid": uid, "resourceVersion": claim["metadata"].get("resourceVersion", "")},
                "hostPath": {"path": str(path.resolve()), "type": "DirectoryOrCreate"},
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy", "Delete"),
                "storageClassName": cls["metadata"]["name"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
            },
        }
        if cls.get("mountOptions"):
            pv["spec"]["mountOptions"] = cls["mountOptions"]
        try:
            created = await self.store.create("persistentvolumes", pv)
        except ApiError as exc:
            if exc.code != 409:
                raise
            created = await self.store.get("persistentvolumes", None, pv["metadata"]["name"])
        await self.store.record_event(
            claim, "Normal", "ProvisioningSucceeded",
            f"Successfully provisioned volume {created['metadata']['name']}", PROVISIONER)
        return dict(created)

    async def _bind(self, claim: Json, pv: Json) -> None:
        ns, name, uid = claim["metadata"]["namespace"], claim["metadata"]["name"], claim["metadata"]["uid"]
        pv_name = pv["metadata"]["name"]
        ref = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": name, "namespace": ns, "uid": uid,
               "resourceVersion": claim["metadata"].get("resourceVersion", "")}

        def pv_claim(o: Json) -> Json | None:
            if (o["spec"].get("claimRef") or {}).get("uid") == uid:
                return None
            o["spec"]["claimRef"] = ref
            o["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bound-by-controller"] = "yes"
            return o

        await self.store.mutate("persistentvolumes", None, pv_name, pv_claim)
        await self.store.mutate("persistentvolumes", None, pv_name,
                                lambda o: _phase(o, "Bound"), subresource="status")
        provisioner = (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")

        def claim_spec(o: Json) -> Json | None:
            annotations = o["metadata"].setdefault("annotations", {})
            before = (o["spec"].get("volumeName"), dict(annotations))
            o["spec"]["volumeName"] = pv_name
            annotations["pv.kubernetes.io/bind-completed"] = "yes"
            annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
            if provisioner:
                annotations["volume.beta.kubernetes.io/storage-provisioner"] = provisioner
                annotations["volume.kubernetes.io/storage-provisioner"] = provisioner
            return None if before == (pv_name, annotations) else o

        await self.store.mutate("persistentvolumeclaims", ns, name, claim_spec)

        def claim_status(o: Json) -> Json | None:
            st = {"phase": "Bound", "accessModes": list(pv["spec"].get("accessModes") or []),
                  "capacity": dict(pv["spec"].get("capacity") or {})}
            if o.get("status") == st:
                return None
            o["status"] = st
            return o

        await self.store.mutate("persistentvolumeclaims", ns, name, claim_status, subresource="status")

    async def _sync_volume(self, pv: Json, claim_uids: set[str]) -> None:
        name = pv["metadata"]["name"]
        ref = pv["spec"].get("claimRef")
        phase = (pv.get("status") or {}).get("phase")
        if ref is None:
            if phase != "Available" and not is_terminating(pv):
                await self.store.mutate("persistentvolumes", None, name, lambda o: _phase(o, "Available"),
                                        subresource="status")
            return
        if not ref.get("uid") or ref["uid"] in claim_uids:
            return  # pre-bound to a claim not created yet, or bound to a live claim
        # The claim is gone: Released, and reclaimed according to the policy.
        if not await self._claim_gone(ref):
            return
        if phase != "Released":
            await self.store.mutate("persistentvolumes", None, name, lambda o: _phase(o, "Released"),
                                    subresource="status")
        if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            host = (pv["spec"].get("hostPath") or {}).get("path")
            storage = self.layout.storage.resolve()
            node = (pv["metadata"].get("annotations") or {}).get("local.path.provisioner/selected-node")
            if host and Path(host).resolve().parent == storage:  # never delete outside DIR/storage
                await asyncio.to_thread(shutil.rmtree, host, True)
            elif host and node and host.startswith(LOCAL_PATH_DIR + "/pvc-"):
                await asyncio.to_thread(shutil.rmtree, self.layout.host_path(node, host), True)
            try:
                if pv["metadata"].get("finalizers"):
                    # kubernetes.io/pv-protection: the pv-protection controller lets it go once unused.
                    await self.store.mutate("persistentvolumes", None, name, _drop_finalizers)
                await self.store.delete("persistentvolumes", None, name)
            except ApiError as exc:
                if exc.code != 404:
                    raise

    async def _claim_gone(self, ref: Json) -> bool:
        try:
            claim = await self.store.get("persistentvolumeclaims", ref.get("namespace"), ref.get("name", ""))
        except ApiError as exc:
            if exc.code == 404:
                return True
            raise
        return bool(claim["metadata"].get("uid") != ref.get("uid"))


def _drop_finalizers(obj: Json) -> Json | None:
    if not obj["metadata"].get("finalizers"):
        return None
    obj["metadata"].pop("finalizers")
    return obj


def _phase(obj: Json, phase: str) -> Json | None:
    if (obj.get("status") or {}).get("phase") == phase:
        return None
    obj["status"] = {**(obj.get("status") or {}), "phase": phase}
    return obj
