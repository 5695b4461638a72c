"""The Store: Kubernetes object semantics on top of etcd, shared by REST handlers, controllers and kubelets.

Objects are stored as JSON under the keys a real API server uses (``/registry/pods/NS/NAME``...), without
``metadata.resourceVersion``: as in a real server the resourceVersion is the etcd ``mod_revision`` of the
key, and a list's resourceVersion is the etcd header revision.

Deletion semantics (documented here because other parts depend on them):
- pods bound to a node and not terminal are deleted gracefully: ``deletionTimestamp`` = now + grace and
  ``deletionGracePeriodSeconds`` are set; the kubelet removes the object with ``grace_period_seconds=0``;
- objects with ``metadata.finalizers`` get ``deletionTimestamp`` and stay until an update empties
  the finalizers, which removes them;
- namespaces become ``Terminating``; the namespace controller empties them and removes them with
  ``delete("namespaces", None, name, grace_period_seconds=0)`` (or by finalizing ``spec.finalizers``
  through the ``finalize`` subresource);
- ``propagation`` sets the garbage collector's finalizers as the generic registry does
  (``deletionFinalizersForGarbageCollection``): ``Orphan`` → ``orphan``, ``Foreground`` →
  ``foregroundDeletion``, ``Background`` → neither; None keeps what the object has. The object then
  waits for the garbage collector like any object with finalizers;
- an update that empties the finalizers removes the object only once ``deletionGracePeriodSeconds`` is 0
  (``ShouldDeleteDuringUpdate``): a pod in graceful termination still waits for its kubelet.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.cluster.api import crds, defaults, errors
from tests.cluster.api.errors import ApiError, FieldError
from tests.cluster.api.etcd_client import EtcdClient, EtcdCompacted, EtcdError, KeyValue
from tests.cluster.api.immutable import immutable_errors
from tests.cluster.api.names import validate_name
from tests.cluster.api.podvalidation import pod_errors
from tests.cluster.api.resources import Registry, Resource
from tests.cluster.api.selectors import Matcher, parse_field_selector, parse_label_selector

Json = dict[str, Any]
# Spelled once here: inside Store, "list" names the method, so annotations there use these aliases.
JsonList = list[Json]
Warnings = list[str]
# An admission step: (store, resource, operation "CREATE"|"UPDATE", new object, old object or None,
# warnings to append to) → may raise ApiError.
Admission = Callable[["Store", Resource, str, Json, "Json | None", list[str]], Awaitable[None]]

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's names.SimpleNameGenerator alphabet
_TERMINAL_PHASES = ("Succeeded", "Failed")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
_MAX_CAS_RETRIES = 50


def now_rfc3339(offset_seconds: int = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Json) -> Json:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


_REGISTRIES: dict[tuple[str, tuple[str, ...]], Registry] = {}


class Store:
    """See the module docstring and the cluster README for the contract."""

    def __init__(self, etcd: EtcdClient, registry: Registry, *, admission: list[Admission] | None = None,
                 mutating_admission: list[Admission] | None = None) -> None:
        self.etcd = etcd
        self.registry = registry
        if admission is None:
            from tests.cluster.api.podsecurity import pod_security_admission
            from tests.cluster.api.quota import quota_admission
            from tests.cluster.api.service_ports import service_allocation
            from tests.cluster.api.serviceaccounts import service_account_admission

            admission = [pod_security_admission, service_allocation, quota_admission]
            if mutating_admission is None:
                mutating_admission = [service_account_admission]
        self.admission = admission
        # Run as a real server runs mutating admission: after NamespaceLifecycle, before the name is
        # generated (a refusal names a generateName-only object by its prefix, `pods "web-7d9f-" is forbidden`).
        self.mutating_admission = mutating_admission or []
        self._event_names: dict[tuple[str, ...], str] = {}

    @classmethod
    def open(cls, endpoints: list[str], discovery_dir: Path, *, ca_file: Path | None = None,
             cert_file: Path | None = None, key_file: Path | None = None) -> Store:
        """A Store on the etcd ``endpoints`` (TLS client cert when given), resources from ``discovery_dir``."""
        etcd = EtcdClient(endpoints, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        # One registry per cluster in this process: the API server's Store and the controllers' see the
        # same custom resources the moment a definition is stored.
        shared = (str(discovery_dir), tuple(endpoints))
        if shared not in _REGISTRIES:
            _REGISTRIES[shared] = Registry(discovery_dir)
        return cls(etcd, _REGISTRIES[shared])

    async def close(self) -> None:
        await self.etcd.close()

    # ----------------------------------------------------------------------------------------- reads
    async def current_revision(self) -> int:
        """etcd's current revision (a linearizable read, as the API server's consistent reads)."""
        try:
            _, revision = await self.etcd.get("/registry/health")
        except EtcdError as exc:
            raise errors.storage_error(exc) from exc
        return revision

    def resource(self, resource: str) -> Resource:
        return self.registry.get(resource)

    def _decode(self, res: Resource, kv: KeyValue) -> Json:
        obj: Json = json.loads(kv.value)
        _meta(obj)["resourceVersion"] = str(kv.mod_revision)
        return obj

    def _encode(self, obj: Json) -> bytes:
        stored = dict(obj)
        meta = dict(stored.get("metadata") or {})
        meta.pop("resourceVersion", None)
        meta.pop("selfLink", None)
        stored["metadata"] = meta
        return json.dumps(stored, separators=(",", ":")).encode()

    async def _read(self, res: Resource, namespace: str | None, name: str) -> tuple[Json, int]:
        try:
            kv, _ = await self.etcd.get(res.etcd_key(namespace, name))
        except EtcdError as exc:
            raise errors.storage_error(exc) from exc
        if kv is None:
            raise errors.not_found(res.plural, res.group, name)
        return self._decode(res, kv), kv.mod_revision

    async def get(self, resource: str, namespace: str | None, name: str) -> Json:
        res = self.resource(resource)
        obj, _ = await self._read(res, namespace if res.namespaced else None, name)
        return obj

    async def list(self, resource: str, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[JsonList, int]:
        items, revision, _, _ = await self.list_page(resource, namespace, label_selector=label_selector,
                                                     field_selector=field_selector)
        return items, revision

    async def list_page(self, resource: str, namespace: str | None = None, *,
                        label_selector: str | None = None, field_selector: str | None = None,
                        limit: int = 0, continue_token: str | None = None, resource_version: int = 0,
                        ) -> tuple[JsonList, int, str | None, int | None]:
        """Items, list revision, continue token, remaining item count (when known).

        ``limit``/``continue_token`` page through a consistent snapshot at the first page's revision,
        as a real server does; an expired snapshot is 410 Expired.
        """
        res = self.resource(resource)
        match = self._matcher(res, label_selector, field_selector)
        prefix = res.etcd_range_prefix(namespace if res.namespaced else None)
        start: str | None = None
        revision = resource_version
        if continue_token:
            revision, start = _decode_continue(continue_token)
        items: JsonList = []
        more = False
        last_key = ""
        try:
            while True:
                batch = max(limit - len(items), 0) * 2 + 1 if limit else 0
                kvs, header_rev, more = await self.etcd.range_prefix(prefix, start=start, limit=batch,
                                                                     revision=revision)
                revision = revision or header_rev
                for i, kv in enumerate(kvs):
                    obj = self._decode(res, kv)
                    last_key = kv.key
                    if match(obj):
                        items.append(obj)
                        if limit and len(items) >= limit:
                            more = more or i < len(kvs) - 1
                            break
                else:
                    if more and kvs:
                        start = kvs[-1].key + "\x00"
                        continue
                break
        except EtcdCompacted as exc:
            if continue_token:
                raise errors.gone(_CONTINUE_EXPIRED) from exc
            raise errors.gone(f"too old resource version: {resource_version}") from exc
        except EtcdError as exc:
            raise errors.storage_error(exc) from exc
        token = _encode_continue(revision, last_key + "\x00") if limit and more else None
        return items, revision, token, None

    def _matcher(self, res: Resource, label_selector: str | None, field_selector: str | None) -> Matcher:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, res.key)
        return lambda obj: labels(obj) and fields(obj)

    # ---------------------------------------------------------------------------------------- writes
    async def create(self, resource: str, obj: Json, *, dry_run: bool = False,
                     warnings: Warnings | None = None) -> Json:
        res = self.resource(resource)
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = _meta(obj)
        if res.namespaced and self.mutating_admission:
            meta["namespace"] = meta.get("namespace") or "default"
            await self._check_namespace(res, meta["namespace"], meta.get("name") or meta.get("generateName") or "")
            for step in self.mutating_admission:
                await step(self, res, "CREATE", obj, None, warnings if warnings is not None else [])
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            else:
                raise errors.invalid(res.kind, res.group, "", [FieldError(
                    "FieldValueRequired", "metadata.name", "name or generateName is required")])
        name = meta["name"]
        if res.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        field_errors = validate_name(res.key, name)
        if field_errors:
            raise errors.invalid(res.kind, res.group, name, field_errors)
        if res.namespaced:
            await self._check_namespace(res, meta["namespace"], name)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if "spec" in obj or res.key in ("deployments.apps", "statefulsets.apps", "replicasets.apps",
                                        "daemonsets.apps", "jobs.batch", "pods"):
            meta["generation"] = 1
        defaults.apply_defaults(res.key, obj, uid=meta["uid"])
        if res.key == crds.KEY:
            crds.prepare(obj, meta["creationTimestamp"])
        field_errors = pod_errors(res.key, obj)
        if field_errors:
            raise errors.invalid(res.kind, res.group, name, field_errors)
        for step in self.admission:
            await step(self, res, "CREATE", obj, None, warnings if warnings is not None else [])
        if dry_run:
            return obj
        try:
            revision = await self.etcd.create(res.etcd_key(meta.get("namespace"), name), self._encode(obj))
        except EtcdError as exc:
            raise errors.storage_error(exc) from exc
        if revision is None:
            raise errors.already_exists(res.plural, res.group, name)
        meta["resourceVersion"] = str(revision)
        if res.key == crds.KEY:
            self.registry.serve_crd(obj)
        if res.key == "namespaces":
            await self._default_service_account(name)
        return obj

    async def _default_service_account(self, namespace: str) -> None:
        """The namespace's ``default`` ServiceAccount, written with the namespace.

        A real cluster's serviceaccounts controller writes it a moment later (the ServiceAccount admission
        plugin waits for it up to about 2 s); writing it here keeps pod creation in a fresh namespace
        deterministic on a loaded machine, and works while no controller manager runs. The controller
        (control/serviceaccounts.py) recreates it when deleted.
        """
        try:
            await self.create("serviceaccounts", {"metadata": {"name": "default", "namespace": namespace}})
        except ApiError as exc:
            if exc.code != 409:
                raise

    async def _check_namespace(self, res: Resource, namespace: str, name: str) -> None:
        """NamespaceLifecycle admission: the namespace must exist and not be terminating."""
        ns_res = self.resource("namespaces")
        try:
            kv, _ = await self.etcd.get(ns_res.etcd_key(None, namespace))
        except EtcdError as exc:
            raise errors.storage_error(exc) from exc
        if kv is None:
            raise errors.not_found("namespaces", "", namespace)
        ns = json.loads(kv.value)
        if (ns.get("status") or {}).get("phase") == "Terminating" or ns["metadata"].get("deletionTimestamp"):
            err = errors.forbidden(
                res.plural, res.group, name,
                f"unable to create new content in namespace {namespace} because it is being terminated")
            assert err.details is not None
            err.details["causes"] = [{"reason": "NamespaceTerminating",
                                      "message": f"namespace {namespace} is being terminated",
                                      "field": "metadata.namespace"}]
            raise err

    async def update(self, resource: str, obj: Json, *, subresource: str | None = None,
                     dry_run: bool = False, warnings: Warnings | None = None) -> Json:
        res = self.resource(resource)
        meta = _meta(obj)
        name = meta.get("name", "")
        namespace = (meta.get("namespace") or "default") if res.namespaced else None
        wanted_rv = meta.get("resourceVersion")
        for _ in range(_MAX_CAS_RETRIES):
            current, mod_rev = await self._read(res, namespace, name)
            if wanted_rv and str(wanted_rv) != str(mod_rev):
                raise errors.conflict(res.plural, res.group, name, errors.OBJECT_MODIFIED)
            uid = meta.get("uid")
            if uid and uid != current["metadata"].get("uid"):
                raise errors.conflict(res.plural, res.group, name, errors.PRECONDITION_UID.format(
                    want=uid, have=current["metadata"].get("uid")))
            new = self._merge_update(res, current, obj, subresource)
            if new == current:
                return current
            if subresource is None:
                fixed = immutable_errors(res.key, current, new)
                if fixed:
                    raise errors.invalid(res.kind, res.group, name, fixed)
            if dry_run:
                return new
            for step in self.admission:
                await step(self, res, "UPDATE", new, current, warnings if warnings is not None else [])
            key = res.etcd_key(namespace, name)
            finalized = (current["metadata"].get("deletionTimestamp") and current["metadata"].get("finalizers")
                         and not new["metadata"].get("finalizers")
                         and new["metadata"].get("deletionGracePeriodSeconds") == 0)
            namespace_done = (res.key == "namespaces" and subresource == "finalize"
                              and new["metadata"].get("deletionTimestamp")
                              and not (new.get("spec") or {}).get("finalizers"))
            try:
                if finalized or namespace_done:
                    revision = await self.etcd.delete(key, mod_rev)
                else:
                    revision = await self.etcd.update(key, self._encode(new), mod_rev)
            except EtcdError as exc:
                raise errors.storage_error(exc) from exc
            if revision is not None:
                new["metadata"]["resourceVersion"] = str(revision)
                return new
            if wanted_rv:
                raise errors.conflict(res.plural, res.group, name, errors.OBJECT_MODIFIED)
        raise errors.conflict(res.plural, res.group, name, errors.OBJECT_MODIFIED)

    def _merge_update(self, res: Resource, current: Json, incoming: Json, subresource: str | None) -> Json:
        cur_meta = current["metadata"]
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in incoming:
                new["status"] = copy.deepcopy(incoming["status"])
            else:
                new.pop("status", None)
            return new
        if subresource == "finalize":
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["finalizers"] = list((incoming.get("spec") or {}).get("finalizers") or [])
            return new
        new = copy.deepcopy(incoming)
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = _meta(new)
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "namespace", "name"):
            if key in cur_meta:
                meta[key] = cur_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = cur_meta.get("resourceVersion")
        if "status" in res.subresources or res.key == "namespaces":
            # The main resource ignores status changes when a status subresource exists.
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        if res.key == "namespaces":
            new["spec"] = copy.deepcopy(current.get("spec", {}))
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = cur_meta["name"]
        if res.key == "pods":
            self._keep_pod_immutables(current, new)
        if res.key == "secrets":
            defaults.fold_string_data(new)
        changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")}
        if changed and "generation" in cur_meta:
            meta["generation"] = int(cur_meta["generation"]) + 1
        return new

    @staticmethod
    def _keep_pod_immutables(current: Json, new: Json) -> None:
        # Pod specs are immutable apart from images, activeDeadlineSeconds and tolerations additions;
        # binding (spec.nodeName) goes through pods/binding. Keep what clients may not change.
        cur_spec, new_spec = current.get("spec") or {}, new.get("spec") or {}
        for key in ("nodeName", "volumes", "restartPolicy", "serviceAccountName", "securityContext",
                    "terminationGracePeriodSeconds"):
            if key in cur_spec:
                new_spec[key] = copy.deepcopy(cur_spec[key])
        new["spec"] = new_spec

    async def mutate(self, resource: str, namespace: str | None, name: str,
                     fn: Callable[[Json], Json | None], *, subresource: str | None = None) -> Json:
        res = self.resource(resource)
        ns = namespace if res.namespaced else None
        for _ in range(_MAX_CAS_RETRIES):
            current, _rev = await self._read(res, ns, name)
            changed = fn(copy.deepcopy(current))
            if changed is None:
                return current
            _meta(changed)["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return await self.update(resource, changed, subresource=subresource)
            except ApiError as exc:
                if exc.reason != "Conflict":
                    raise
        raise errors.conflict(res.plural, res.group, name, errors.OBJECT_MODIFIED)

    async def bind(self, namespace: str, name: str, node: str) -> Json:
        """pods/binding: set spec.nodeName once (409 when already bound elsewhere)."""
        res = self.resource("pods")
        for _ in range(_MAX_CAS_RETRIES):
            current, mod_rev = await self._read(res, namespace, name)
            bound = (current.get("spec") or {}).get("nodeName")
            if current["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods", "", name, "pod is being deleted, cannot be assigned to a host")
            if bound:
                raise errors.conflict("pods", "", name, f"pod {name} is already assigned to node \"{bound}\"")
            new = copy.deepcopy(current)
            new["spec"]["nodeName"] = node
            conditions = new.setdefault("status", {}).setdefault("conditions", [])
            conditions[:] = [c for c in conditions if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                               "lastTransitionTime": now_rfc3339()})
            revision = await self.etcd.update(res.etcd_key(namespace, name), self._encode(new), mod_rev)
            if revision is not None:
                new["metadata"]["resourceVersion"] = str(revision)
                return new
        raise errors.conflict("pods", "", name, errors.OBJECT_MODIFIED)

    async def delete(self, resource: str, namespace: str | None, name: str, *,
                     grace_period_seconds: int | None = None, propagation: str | None = None,
                     preconditions: Json | None = None, dry_run: bool = False) -> Json:
        res = self.resource(resource)
        ns = namespace if res.namespaced else None
        key = res.etcd_key(ns, name)
        for _ in range(_MAX_CAS_RETRIES):
            current, mod_rev = await self._read(res, ns, name)
            meta = current["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                    raise errors.conflict(res.plural, res.group, name, errors.PRECONDITION_UID.format(
                        want=preconditions["uid"], have=meta.get("uid")))
                want_rv = preconditions.get("resourceVersion")
                if want_rv and str(want_rv) != str(mod_rev):
                    raise errors.conflict(res.plural, res.group, name,
                                          f"Precondition failed: ResourceVersion in precondition: {want_rv}, "
                                          f"ResourceVersion in object meta: {mod_rev}")
            new = self._deletion_state(res, current, grace_period_seconds, propagation)
            if dry_run:
                return new if new is not None else current
            if new is None:
                revision = await self.etcd.delete(key, mod_rev)
                if revision is not None:
                    if res.key == crds.KEY:
                        await crds.remove_objects(self, current)
                        self.registry.forget_crd(name)
                    return current
                continue
            if new == current:
                return current
            revision = await self.etcd.update(key, self._encode(new), mod_rev)
            if revision is not None:
                new["metadata"]["resourceVersion"] = str(revision)
                return new
        raise errors.conflict(res.plural, res.group, name, errors.OBJECT_MODIFIED)

    def _deletion_state(self, res: Resource, current: Json, grace: int | None,
                        propagation: str | None = None) -> Json | None:
        """The object after a delete request, or None when it goes away now."""
        meta = current["metadata"]
        if res.key == "namespaces":
            if meta.get("deletionTimestamp") and grace == 0:
                return None
            new = copy.deepcopy(current)
            new["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            new.setdefault("status", {})["phase"] = "Terminating"
            return new
        new = copy.deepcopy(current)
        new_meta = new["metadata"]
        finalizers = _gc_finalizers(list(meta.get("finalizers") or []), propagation)
        if finalizers:
            new_meta["finalizers"] = finalizers
        else:
            new_meta.pop("finalizers", None)
        if res.key == "pods":
            spec, status = current.get("spec") or {}, current.get("status") or {}
            if spec.get("nodeName") and status.get("phase") not in _TERMINAL_PHASES and grace != 0:
                if grace is None:
                    grace = int(spec.get("terminationGracePeriodSeconds", 30))
                old_grace = meta.get("deletionGracePeriodSeconds")
                if old_grace is None or grace < old_grace:  # a later delete may only shorten the grace period
                    new_meta["deletionTimestamp"] = now_rfc3339(grace)
                    new_meta["deletionGracePeriodSeconds"] = grace
                return new
        if finalizers:
            if not meta.get("deletionTimestamp") or meta.get("deletionGracePeriodSeconds") != 0:
                new_meta["deletionTimestamp"] = now_rfc3339()
                new_meta["deletionGracePeriodSeconds"] = 0
            return new
        return None

    # ----------------------------------------------------------------------------------------- watch
    async def watch(self, resource: str, namespace: str | None = None, *, resource_version: int | None = None,
                    label_selector: str | None = None, field_selector: str | None = None
                    ) -> AsyncIterator[tuple[str, Json]]:
        """Events as ("ADDED"|"MODIFIED"|"DELETED", obj).

        Without ``resource_version`` (or with 0) the current matching objects come first as ADDED, as a
        real server does; otherwise only changes after that revision. A compacted revision raises
        410 Expired ("too old resource version").
        """
        res = self.resource(resource)
        match = self._matcher(res, label_selector, field_selector)
        prefix = res.etcd_range_prefix(namespace if res.namespaced else None)
        if not resource_version:
            items, revision = await self.list(resource, namespace, label_selector=label_selector,
                                              field_selector=field_selector)
            for item in items:
                yield "ADDED", item
        else:
            revision = resource_version
        try:
            async for event in self.etcd.watch_prefix(prefix, revision + 1):
                if event.type == "DELETE":
                    if event.prev_kv is None:
                        continue
                    old = self._decode(res, event.prev_kv)
                    if match(old):
                        old["metadata"]["resourceVersion"] = str(event.kv.mod_revision)
                        yield "DELETED", old
                    continue
                obj = self._decode(res, event.kv)
                now_matches = match(obj)
                before = match(self._decode(res, event.prev_kv)) if event.prev_kv else False
                if now_matches:
                    yield ("MODIFIED" if before else "ADDED"), obj
                elif before:
                    yield "DELETED", obj
        except EtcdCompacted as exc:
            raise errors.gone(f"too old resource version: {revision} ({exc.compact_revision})") from exc

    # ---------------------------------------------------------------------------------------- events
    async def record_event(self, involved: Json, type: str, reason: str, message: str,
                           component: str) -> None:
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        ref = {"kind": involved.get("kind", ""), "namespace": meta.get("namespace", ""),
               "name": meta.get("name", ""), "uid": meta.get("uid", ""),
               "apiVersion": involved.get("apiVersion", ""),
               "resourceVersion": meta.get("resourceVersion", "")}
        ref = {k: v for k, v in ref.items() if v}
        dedupe = (namespace, ref.get("uid", ""), ref.get("name", ""), type, reason, message, component)
        timestamp = now_rfc3339()
        existing = self._event_names.get(dedupe)
        if existing:

            def bump(ev: Json) -> Json:
                ev["count"] = int(ev.get("count", 1)) + 1
                ev["lastTimestamp"] = timestamp
                return ev

            try:
                await self.mutate("events", namespace, existing, bump)
                return
            except ApiError as exc:
                if exc.code != 404:
                    raise
        name = f"{ref.get('name', 'event')}.{uuid.uuid4().int & (1 << 64) - 1:016x}"
        event = {"metadata": {"name": name, "namespace": namespace}, "involvedObject": ref,
                 "reason": reason, "message": message, "type": type, "count": 1,
                 "source": {"component": component}, "firstTimestamp": timestamp,
                 "lastTimestamp": timestamp, "reportingComponent": component, "reportingInstance": ""}
        try:
            await self.create("events", event)
        except ApiError as exc:
            if exc.code in (403, 404):  # namespace gone or terminating: events are best effort
                return
            raise
        self._event_names[dedupe] = name


def _gc_finalizers(finalizers: list[str], propagation: str | None) -> list[str]:
    """The finalizers after a delete with ``propagation`` (deletionFinalizersForGarbageCollection)."""
    if propagation not in ("Orphan", "Foreground", "Background"):
        return finalizers
    kept = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
    if propagation == "Orphan":
        kept.append(ORPHAN_FINALIZER)
    elif propagation == "Foreground":
        kept.append(FOREGROUND_FINALIZER)
    return finalizers if set(kept) == set(finalizers) else kept


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


def _encode_continue(revision: int, start: str) -> str:
    doc = {"v": "meta.k8s.io/v1", "rv": revision, "start": start}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                 "(version meta.k8s.io/v1)") from exc
