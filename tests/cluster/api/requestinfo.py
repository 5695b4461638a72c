"""Parse a REST path the way apiserver's RequestInfoFactory does."""

from __future__ import annotations

from dataclasses import dataclass

from tests.cluster.api.resources import Registry, Resource, not_found_path

_VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "GET": "get",
                   "HEAD": "get"}


@dataclass
class RequestInfo:
    resource: Resource
    group: str
    version: str
    namespace: str  # "" for cluster-scoped or all-namespaces requests
    name: str
    subresource: str
    verb: str  # get list watch create update patch delete deletecollection

    @property
    def is_collection(self) -> bool:
        return not self.name


def parse(path: str, method: str, query: dict[str, str], registry: Registry) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise not_found_path()
    namespace = ""
    # /namespaces/NS/RESOURCE... but /namespaces/NAME[/status|/finalize] is the namespace itself.
    namespace_itself = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not namespace_itself:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        raise not_found_path()
    resource = registry.lookup(group, version, rest[0])
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and subresource not in resource.subresources:
        raise not_found_path()
    verb = _VERB_BY_METHOD.get(method, method.lower())
    if not name:
        if method in ("GET", "HEAD"):
            verb = "watch" if query.get("watch") in ("1", "true", "True") else "list"
        elif method == "DELETE":
            verb = "deletecollection"
    return RequestInfo(resource, group, version, namespace, name, subresource, verb)
