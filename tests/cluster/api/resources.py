"""The resource registry: every resource the discovery documents list, and where it lives in etcd.

Built from the real discovery responses (``discovery/api__v1.json`` for the core group and
``discovery/aggregated_v2.json`` for the named groups), so that REST, RBAC and discovery agree.
"""

from __future__ import annotations

import json
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

    @property
    def key(self) -> str:
        """How the Store names this resource: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @cached_property
    def etcd_prefix(self) -> str:
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


def not_found_path() -> ApiError:
    """The 404 a real server sends for a path no handler serves."""
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


__all__ = ["Registry", "Resource", "Subresource", "not_found", "not_found_path"]
