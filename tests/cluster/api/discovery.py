"""Discovery (legacy and aggregated), ``/version`` and the health endpoints, from the real documents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.cluster.api.resources import Registry, not_found_path

if TYPE_CHECKING:
    from tests.cluster.api.store import Store

Json = dict[str, Any]
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def _wants_aggregated(request: web.Request) -> str | None:
    """The aggregated media type the client accepts (client-go lists it first), if any."""
    accept = request.headers.get("Accept", "").replace(" ", "")
    for media in accept.split(","):
        if "as=APIGroupDiscoveryList" in media and "g=apidiscovery.k8s.io" in media:
            return AGGREGATED_V2BETA1 if "v=v2beta1" in media else AGGREGATED_V2
    return None


class Discovery:
    def __init__(self, api_dir: Path, registry: Registry, git_version: str) -> None:
        self.dir = api_dir / "discovery"
        self.registry = registry
        self.git_version = git_version
        self.aggregated: Json = registry.aggregated
        self.core_aggregated = self._core_aggregated()

    def _file(self, name: str) -> Json | None:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _core_aggregated(self) -> Json:
        """The aggregated document of ``/api``, derived from ``/api/v1`` (no copy of it is in the data)."""
        doc = self._file("api__v1") or {"resources": []}
        resources: dict[str, Json] = {}
        for entry in doc["resources"]:
            name = entry["name"]
            if "/" in name:
                parent, sub = name.split("/", 1)
                if parent in resources:
                    sub_doc: Json = {"subresource": sub, "verbs": entry["verbs"]}
                    if entry.get("kind"):
                        sub_doc["responseKind"] = {"group": entry.get("group", ""),
                                                   "kind": entry["kind"], "version": entry.get("version", "")}
                    resources[parent].setdefault("subresources", []).append(sub_doc)
                continue
            res: Json = {"resource": name, "responseKind": {"group": "", "kind": entry["kind"], "version": ""},
                         "scope": "Namespaced" if entry["namespaced"] else "Cluster",
                         "singularResource": entry.get("singularName", ""), "verbs": entry["verbs"]}
            for key in ("shortNames", "categories"):
                if entry.get(key):
                    res[key] = entry[key]
            resources[name] = res
        return {"apiVersion": "apidiscovery.k8s.io/v2", "kind": "APIGroupDiscoveryList", "metadata": {},
                "items": [{"metadata": {"creationTimestamp": None},
                           "versions": [{"version": "v1", "resources": list(resources.values()),
                                         "freshness": "Current"}]}]}

    def _group_doc(self, group: str) -> Json:
        doc = self._file(f"apis__{group}")
        if doc is not None:
            return doc
        for item in self.aggregated["items"]:
            if item["metadata"]["name"] == group:
                versions = [{"groupVersion": f"{group}/{v['version']}", "version": v["version"]}
                            for v in item["versions"]]
                return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                        "preferredVersion": versions[0]}
        raise not_found_path()

    def _group_version_doc(self, group: str, version: str) -> Json:
        doc = self._file(f"apis__{group}__{version}")
        if doc is not None:
            return doc
        for item in self.aggregated["items"]:
            if item["metadata"]["name"] != group:
                continue
            for v in item["versions"]:
                if v["version"] != version:
                    continue
                resources: list[Json] = []
                for r in v["resources"]:
                    kind = r["responseKind"]["kind"]
                    entry: Json = {"name": r["resource"], "singularName": r.get("singularResource", ""),
                                   "namespaced": r["scope"] == "Namespaced", "kind": kind, "verbs": r["verbs"]}
                    for key in ("shortNames", "categories"):
                        if r.get(key):
                            entry[key] = r[key]
                    resources.append(entry)
                    for sub in r.get("subresources", []):
                        rk = sub.get("responseKind", {})
                        sub_entry: Json = {"name": f"{r['resource']}/{sub['subresource']}", "singularName": "",
                                           "namespaced": r["scope"] == "Namespaced",
                                           "kind": rk.get("kind", kind), "verbs": sub.get("verbs", [])}
                        if rk.get("group"):
                            sub_entry["group"], sub_entry["version"] = rk["group"], rk.get("version", "")
                        resources.append(sub_entry)
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                        "resources": resources}
        raise not_found_path()

    # ---------------------------------------------------------------------------------------- routes
    def add_routes(self, app: web.Application, store: Store) -> None:
        async def api(request: web.Request) -> web.StreamResponse:
            media = _wants_aggregated(request)
            if media:
                return _json(self.core_aggregated, media)
            doc = self._file("api") or {"kind": "APIVersions", "versions": ["v1"]}
            doc["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]
            return _json(doc)

        async def api_v1(request: web.Request) -> web.StreamResponse:
            return _json(self._file("api__v1"))

        async def apis(request: web.Request) -> web.StreamResponse:
            media = _wants_aggregated(request)
            if media:
                return _json(self.aggregated, media)
            doc = self._file("apis") or {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            for name in self.registry.custom_groups():
                doc["groups"].append(self._group_doc(name))
            return _json(doc)

        async def group(request: web.Request) -> web.StreamResponse:
            return _json(self._group_doc(request.match_info["group"]))

        async def group_version(request: web.Request) -> web.StreamResponse:
            return _json(self._group_version_doc(request.match_info["group"], request.match_info["version"]))

        async def version(request: web.Request) -> web.StreamResponse:
            major, minor = self.git_version.lstrip("v").split(".")[:2]
            return _json({
                "major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
                "minCompatibilityMajor": major, "minCompatibilityMinor": str(int(minor) - 1),
                "gitVersion": self.git_version, "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2026-04-22T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
                "platform": "linux/amd64",
            })

        async def health(request: web.Request) -> web.StreamResponse:
            checks = ["ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer"]
            if request.path.strip("/") == "readyz":
                checks.insert(3, "etcd-readiness")
            failed = False
            try:
                # The etcd check: a linearizable read within --etcd-healthcheck-timeout (2 s): it fails
                # when no member answers and when the members lost quorum.
                await asyncio.wait_for(store.etcd.get("/registry/health"), 2.0)
            except Exception:
                failed = True
            name = request.path.strip("/")
            if not failed and "verbose" not in request.query:
                return web.Response(text="ok")
            # healthz.handleRootHealth: a failure always lists every check, the failed ones "reason withheld".
            lines = [f"[-]{c} failed: reason withheld" if failed and c.startswith("etcd") else f"[+]{c} ok"
                     for c in checks]
            lines.append(f"{name} check {'failed' if failed else 'passed'}")
            return web.Response(text="\n".join(lines) + "\n", status=500 if failed else 200,
                                headers={"X-Content-Type-Options": "nosniff"})

        app.router.add_get("/api", api)
        app.router.add_get("/api/", api)
        app.router.add_get("/api/v1", api_v1)
        app.router.add_get("/apis", apis)
        app.router.add_get("/apis/", apis)
        app.router.add_get("/apis/{group}", group)
        app.router.add_get("/apis/{group}/{version}", group_version)
        app.router.add_get("/version", version)
        app.router.add_get("/version/", version)  # go-restful serves both; the Python client asks for this one
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, health)


def _json(doc: Json | None, content_type: str = "application/json") -> web.Response:
    if doc is None:
        raise not_found_path()
    return web.Response(body=json.dumps(doc, separators=(",", ":")).encode(),
                        headers={"Content-Type": content_type})


__all__ = ["AGGREGATED_V2", "Discovery"]
