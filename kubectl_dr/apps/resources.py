"""The resource types a server serves (discovery, preferred versions), as backups and restores need them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubectl_dr.kube.client import Kube

Json = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        """`kubectl api-resources`' qualified name: deployments.apps, pods."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def collection_path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"

    def matches(self, word: str) -> bool:
        """Whether a --include/--exclude-resources word names this type (plural, qualified, kind, short name)."""
        word = word.strip().lower()
        return word in (self.plural, self.name, self.kind.lower(), *self.short_names) or (
            "." in word and word.split(".", 1)[0] in (self.plural, self.kind.lower())
            and word.split(".", 1)[1] == self.group)


class Catalog:
    """Every type the server serves, by (group, kind) and by qualified name."""

    def __init__(self, types: list[ResourceType]) -> None:
        self.types = types
        self.by_kind = {(t.group, t.kind): t for t in types}

    def for_object(self, obj: Json) -> ResourceType | None:
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        return self.by_kind.get((group, str(obj.get("kind", ""))))

    def named(self, name: str) -> ResourceType | None:
        return next((t for t in self.types if t.name == name), None)


def _types(kube: Kube, path: str, group: str, version: str) -> list[ResourceType]:
    doc = kube.get(path)
    found = []
    for entry in doc.get("resources") or []:
        if "/" in entry["name"]:
            continue
        found.append(ResourceType(group, version, entry["name"], entry["kind"], bool(entry["namespaced"]),
                                  frozenset(entry.get("verbs") or ()), tuple(entry.get("shortNames") or ())))
    return found


def discover(kube: Kube) -> Catalog:
    """The core group and every named group at its preferred version, as `kubectl api-resources` lists them."""
    types = _types(kube, "/api/v1", "", "v1")
    for group in kube.get("/apis").get("groups") or []:
        preferred = (group.get("preferredVersion") or group["versions"][0])["version"]
        types.extend(_types(kube, f"/apis/{group['name']}/{preferred}", group["name"], preferred))
    return Catalog(types)
