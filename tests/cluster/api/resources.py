"""The resource registry: every resource the discovery documents list, and where it lives in etcd.

Built from the real discovery responses (``discovery/api__v1.json`` for the core group and
``discovery/aggregated_v2.json`` for the named groups), so that REST, RBAC and discovery agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tests.cluster.api.errors import ApiError, not_found

# Where a real kube-apiserver keeps resources whose etcd prefix is not simply their plural name
# (pkg/registry/*/storage: e.g. nodes are still "minions", services "services/specs").
_ETCD_PREFIX = {
    ("", "nodes"): "minions",
    ("", "services"): "services/specs",
    ("", "endpoints"): "services/endpoints",
    ("", "replicationcontrollers"): "controllers",
    ("networking.k8s.io", "ingresses"): "ingress",
    ("apiextensions.k8s.io", "customresourcedefinitions"): "apiextensions.k8s.io/customresourcedefinitions",
    ("apiregistration.k8s.io", "apiservices"): "apiregistration.k8s.io/apiservices",
    # events.k8s.io/v1 Events share core Events' storage in a real server, through conversion this
    # server does not do; give them their own prefix so neither API sees the other's shape.
    ("events.k8s.io", "events"): "events.k8s.io/events",
}


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    group: str
    version: str
    verbs: tuple[str, ...]


@dataclass
class Resource:
    """One resource of one group, served at its preferred version (and stored at it)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    subresources: dict[str, Subresource] = field(default_factory=dict)
    custom: bool = False  # served for a CustomResourceDefinition (its objects live under /registry/GROUP/PLURAL)

    @property
    def key(self) -> str:
        """How the Store names this resource: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @cached_property
    def etcd_prefix(self) -> str:
        if self.custom:
            # apiextensions-apiserver's storage: /registry/<group>/<plural>/<namespace>/<name>.
            return f"/registry/{self.group}/{self.plural}/"
        return "/registry/" + _ETCD_PREFIX.get((self.group, self.plural), self.plural) + "/"

    def etcd_key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.etcd_prefix}{namespace}/{name}"
        return f"{self.etcd_prefix}{name}"

    def etcd_range_prefix(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.etcd_prefix}{namespace}/"
        return self.etcd_prefix


class Registry:
    """All resources, looked up by Store name, by (group, plural) and by kind."""

    def __init__(self, discovery_dir: Path) -> None:
        self.discovery_dir = discovery_dir
        self.by_key: dict[str, Resource] = {}
        self._load_core(json.loads((discovery_dir / "api__v1.json").read_text()))
        self.aggregated: dict[str, Any] = json.loads((discovery_dir / "aggregated_v2.json").read_text())
        self._load_groups(self.aggregated)
        self._builtin_groups = {item["metadata"]["name"] for item in self.aggregated["items"]}
        self.custom_crds: dict[str, str] = {}  # Store name of a custom resource → its CRD's name
        self.custom_definitions: dict[str, dict[str, Any]] = {}  # the same → the definition itself

    def _load_core(self, doc: dict[str, Any]) -> None:
        subs: list[dict[str, Any]] = []
        for entry in doc["resources"]:
            if "/" in entry["name"]:
                subs.append(entry)
                continue
            res = Resource(
                group="", version="v1", plural=entry["name"], singular=entry.get("singularName", ""),
                kind=entry["kind"], namespaced=entry["namespaced"], verbs=tuple(entry["verbs"]),
                short_names=tuple(entry.get("shortNames", ())), categories=tuple(entry.get("categories", ())),
                versions=("v1",),
            )
            self.by_key[res.key] = res
        for entry in subs:
            parent, sub = entry["name"].split("/", 1)
            self.by_key[parent].subresources[sub] = Subresource(
                sub, entry["kind"], entry.get("group", ""), entry.get("version", "v1"), tuple(entry["verbs"]))

    def _load_groups(self, doc: dict[str, Any]) -> None:
        for group_doc in doc["items"]:
            group = group_doc["metadata"]["name"]
            # The first version listed is the preferred one (it is also listed first in /apis).
            for version_doc in group_doc["versions"]:
                version = version_doc["version"]
                for entry in version_doc["resources"]:
                    key = f"{entry['resource']}.{group}"
                    if key in self.by_key:
                        res = self.by_key[key]
                        res.versions = (*res.versions, version)
                        continue
                    kind_doc = entry["responseKind"]
                    res = Resource(
                        group=group, version=version, plural=entry["resource"],
                        singular=entry.get("singularResource", ""), kind=kind_doc["kind"],
                        namespaced=entry["scope"] == "Namespaced", verbs=tuple(entry["verbs"]),
                        short_names=tuple(entry.get("shortNames", ())),
                        categories=tuple(entry.get("categories", ())), versions=(version,),
                    )
                    for sub in entry.get("subresources", ()):
                        rk = sub.get("responseKind", {})
                        res.subresources[sub["subresource"]] = Subresource(
                            sub["subresource"], rk.get("kind", ""), rk.get("group", ""),
                            rk.get("version", ""), tuple(sub.get("verbs", ())))
                    self.by_key[key] = res

    # ------------------------------------------------------------------- custom resources
    def serve_crd(self, crd: dict[str, Any]) -> Resource:
        """Serve the resource a CustomResourceDefinition defines (discovery and REST), at its preferred
        version: the served version of highest priority, as the real discovery orders them."""
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec.get("versions") or [] if v.get("served", True)]
        served.sort(key=lambda v: version_priority(v["name"]))
        if not served:
            raise ValueError(f"{crd['metadata']['name']} serves no version")
        preferred = served[0]
        res = Resource(
            group=spec["group"], version=preferred["name"], plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(), kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced", verbs=CUSTOM_VERBS,
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            versions=tuple(v["name"] for v in served), custom=True,
        )
        subresources = preferred.get("subresources") or {}
        if "status" in subresources:
            res.subresources["status"] = Subresource("status", names["kind"], spec["group"], preferred["name"],
                                                     ("get", "patch", "update"))
        if "scale" in subresources:
            res.subresources["scale"] = Subresource("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update"))
        self.by_key[res.key] = res
        self.custom_crds[res.key] = crd["metadata"]["name"]
        self.custom_definitions[res.key] = crd
        self._sync_aggregated()
        return res

    def forget_crd(self, name: str) -> None:
        """Stop serving the resource of the CustomResourceDefinition ``name`` (deleted)."""
        for key, crd_name in list(self.custom_crds.items()):
            if crd_name == name:
                del self.custom_crds[key]
                self.custom_definitions.pop(key, None)
                self.by_key.pop(key, None)
        self._sync_aggregated()

    def custom_groups(self) -> list[str]:
        return sorted({self.by_key[k].group for k in self.custom_crds} - self._builtin_groups)

    def _sync_aggregated(self) -> None:
        """The aggregated discovery document: the built-in groups as loaded, then one item per custom group."""
        items = [item for item in self.aggregated["items"] if item["metadata"]["name"] in self._builtin_groups]
        by_group: dict[str, dict[str, list[Resource]]] = {}
        for key in self.custom_crds:
            res = self.by_key[key]
            for version in res.versions:
                by_group.setdefault(res.group, {}).setdefault(version, []).append(res)
        for group in sorted(by_group):
            versions = sorted(by_group[group], key=version_priority)
            items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": [
                {"version": v, "freshness": "Current",
                 "resources": [_aggregated_entry(r, v) for r in sorted(by_group[group][v], key=lambda r: r.plural)]}
                for v in versions]})
        self.aggregated["items"] = items

    def get(self, key: str) -> Resource:
        """Look up a Store resource name (``pods``, ``deployments.apps``)."""
        try:
            return self.by_key[key]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({key})",
                           {"kind": key}) from None

    def lookup(self, group: str, version: str, plural: str) -> Resource:
        """Resolve a REST path's group/version/plural; 404 as a real server does for unknown ones."""
        key = f"{plural}.{group}" if group else plural
        res = self.by_key.get(key)
        if res is None or version not in res.versions:
            raise not_found_path()
        return res


CUSTOM_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order (GA > beta > alpha, higher numbers first, then anything else by name)."""
    match = _VERSION.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = int(match[1]), match[2], int(match[3] or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, version)


def _aggregated_entry(res: Resource, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": res.plural, "responseKind": {"group": res.group, "kind": res.kind, "version": version},
        "scope": "Namespaced" if res.namespaced else "Cluster", "singularResource": res.singular,
        "verbs": list(res.verbs)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    subs = [{"subresource": sub.name, "responseKind": {"group": sub.group, "kind": sub.kind, "version": sub.version},
             "verbs": list(sub.verbs)} for sub in res.subresources.values()]
    if subs:
        entry["subresources"] = subs
    return entry


def not_found_path() -> ApiError:
    """The 404 a real server sends for a path no handler serves."""
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


__all__ = ["Registry", "Resource", "Subresource", "not_found", "not_found_path"]
