"""OpenAPI documents derived from the real OpenAPI v2 document of Kubernetes.

``/openapi/v2`` serves it as JSON. ``/openapi/v3`` lists one document per group-version, converted from v2
(``$ref``s to ``#/components/schemas``, parameters inlined, bodies as ``requestBody``). kubectl decides
that the server supports ``fieldValidation`` by finding that query parameter on the PATCH operation of
the object's group-version-kind in these v3 documents (QueryParamVerifierV3).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.cluster.api.resources import not_found_path

Json = dict[str, Any]
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/definitions/"):
                out[key] = "#/components/schemas/" + value[len("#/definitions/"):]
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


class OpenAPI:
    def __init__(self, v2_path: Path) -> None:
        self.v2_path = v2_path
        self._v3_cache: dict[str, bytes] = {}
        self.registry: Any = None  # the served custom resources publish their schemas (set by build_app)

    def _custom(self) -> dict[str, list[Json]]:
        """``apis/GROUP/VERSION`` → the definitions served at it."""
        out: dict[str, list[Json]] = {}
        for crd in (self.registry.custom_definitions.values() if self.registry is not None else ()):
            for version in crd["spec"].get("versions") or []:
                if version.get("served", True):
                    out.setdefault(f"apis/{crd['spec']['group']}/{version['name']}", []).append(crd)
        return out

    def _custom_document(self, group_version: str, crds: list[Json]) -> bytes:
        """What apiextensions-apiserver publishes for a version of its definitions: each kind's schema with
        its group-version-kind, and the paths with the query parameters kubectl looks for (fieldValidation)."""
        group, version = group_version.split("/")[1:3]
        schemas: Json = {}
        paths: Json = {}
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("dryRun", "fieldManager", "fieldValidation")]
        for crd in crds:
            names, spec = crd["spec"]["names"], crd["spec"]
            served = next(v for v in spec["versions"] if v["name"] == version)
            schema = dict((served.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
            properties = dict(schema.get("properties") or {})
            properties.update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"$ref": "#/components/schemas/"
                                                    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}})
            schema["properties"] = properties
            schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": names["kind"], "version": version}]
            reverse = ".".join(reversed(group.split(".")))
            ref_name = f"{reverse}.{version}.{names['kind']}"
            schemas[ref_name] = schema
            body = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref_name}"}}}}
            base = f"/apis/{group}/{version}" + ("/namespaces/{namespace}" if spec.get("scope") == "Namespaced"
                                                 else "")
            # kubectl finds the operations of a kind by this extension (queryparams_v3.go).
            gvk = {"x-kubernetes-group-version-kind": {"group": group, "kind": names["kind"], "version": version}}
            paths[f"{base}/{names['plural']}"] = {"post": {"parameters": params, "requestBody": body, **gvk},
                                                  "get": {"parameters": [], **gvk}}
            paths[f"{base}/{names['plural']}/{{name}}"] = {
                m: {"parameters": params, "requestBody": body, **gvk} for m in ("put", "patch")}
        seen: set[str] = set()
        self._referenced({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}, seen)
        for name in sorted(seen):
            schemas[name] = _rewrite_refs(self.definitions[name])
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
               "paths": paths, "components": {"schemas": schemas}}
        return json.dumps(doc, separators=(",", ":")).encode()

    @cached_property
    def v2(self) -> Json:
        doc: Json = json.loads(self.v2_path.read_text())
        return doc

    @cached_property
    def v2_bytes(self) -> bytes:
        return self.v2_path.read_bytes()

    @cached_property
    def definitions(self) -> Json:
        defs: Json = self.v2["definitions"]
        return defs

    @cached_property
    def group_versions(self) -> dict[str, list[str]]:
        """``api/v1``, ``apis/apps/v1``… → the v2 paths that belong to it."""
        out: dict[str, list[str]] = {}
        for path in self.v2["paths"]:
            parts = path.strip("/").split("/")
            if parts[0] == "api" and len(parts) >= 2:
                key = f"api/{parts[1]}"
            elif parts[0] == "apis" and len(parts) >= 3:
                key = f"apis/{parts[1]}/{parts[2]}"
            else:
                continue
            out.setdefault(key, []).append(path)
        return out

    def _param(self, param: Json) -> Json:
        if "$ref" in param:
            param = self.v2["parameters"][param["$ref"].rsplit("/", 1)[1]]
        return param

    def _operation(self, op: Json, path_params: list[Json]) -> Json:
        out = {k: v for k, v in op.items() if k not in ("parameters", "consumes", "produces", "schemes",
                                                          "responses")}
        params = []
        for raw in path_params + op.get("parameters", []):
            p = self._param(raw)
            if p.get("in") == "body":
                content = {media: {"schema": _rewrite_refs(p.get("schema", {}))}
                           for media in op.get("consumes", ["application/json"]) if media != "*/*"} or {
                    "*/*": {"schema": _rewrite_refs(p.get("schema", {}))}}
                out["requestBody"] = {"content": content, "required": bool(p.get("required"))}
                continue
            schema = {k: p[k] for k in ("type", "format", "items") if k in p}
            v3 = {"name": p["name"], "in": p["in"], "schema": schema}
            for key in ("description", "required"):
                if key in p:
                    v3[key] = p[key]
            params.append(v3)
        if params:
            out["parameters"] = params
        responses = {}
        for code, resp in op.get("responses", {}).items():
            r: Json = {"description": resp.get("description", "")}
            if "schema" in resp:
                r["content"] = {media: {"schema": _rewrite_refs(resp["schema"])}
                                for media in op.get("produces", ["application/json"])}
            responses[code] = r
        out["responses"] = responses
        return out

    def _referenced(self, node: Any, seen: set[str]) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen and name in self.definitions:
                    seen.add(name)
                    self._referenced(_rewrite_refs(self.definitions[name]), seen)
            for value in node.values():
                self._referenced(value, seen)
        elif isinstance(node, list):
            for value in node:
                self._referenced(value, seen)

    def v3_document(self, group_version: str) -> bytes:
        custom = self._custom()
        if group_version in custom:
            return self._custom_document(group_version, custom[group_version])
        if group_version in self._v3_cache:
            return self._v3_cache[group_version]
        paths = self.group_versions.get(group_version)
        if paths is None:
            raise not_found_path()
        out_paths: Json = {}
        for path in paths:
            item = self.v2["paths"][path]
            path_params = item.get("parameters", [])
            out_paths[path] = {m: self._operation(item[m], path_params) for m in _METHODS if m in item}
        seen: set[str] = set()
        self._referenced(out_paths, seen)
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": self.v2["info"]["version"]},
               "paths": out_paths,
               "components": {"schemas": {n: _rewrite_refs(self.definitions[n]) for n in sorted(seen)},
                              "securitySchemes": {"BearerToken": {"type": "apiKey", "description":
                                                                  "Bearer Token authentication",
                                                                  "name": "authorization", "in": "header"}}}}
        data = json.dumps(doc, separators=(",", ":")).encode()
        self._v3_cache[group_version] = data
        return data

    def v3_root(self) -> Json:
        custom = self._custom()
        hashes = {gv: self._hash(gv) for gv in self.group_versions}
        for gv, crds in custom.items():
            text = json.dumps(crds, sort_keys=True)
            hashes[gv] = hashlib.sha512((gv + text).encode()).hexdigest()[:128].upper()
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={hashes[gv]}"}
                          for gv in sorted(hashes)}}

    def _hash(self, gv: str) -> str:
        # Stable per document and data file, like the real server's content hash.
        return hashlib.sha512((gv + str(self.v2_path.stat().st_mtime_ns)).encode()).hexdigest()[:128].upper()

    def add_routes(self, app: web.Application) -> None:
        async def v2(request: web.Request) -> web.StreamResponse:
            accept = request.headers.get("Accept", "")
            if "protobuf" in accept and "json" not in accept:
                # Only JSON is served; a protobuf-only client gets what a server sends for unknown types.
                return web.Response(status=406, text="only application/json is served\n")
            return web.Response(body=self.v2_bytes, headers={"Content-Type": "application/json"})

        async def v3_root(request: web.Request) -> web.StreamResponse:
            return web.Response(body=json.dumps(self.v3_root()).encode(),
                                headers={"Content-Type": "application/json"})

        async def v3_doc(request: web.Request) -> web.StreamResponse:
            data = self.v3_document(request.match_info["gv"])
            headers = {"Content-Type": "application/json"}
            if "hash" in request.query:
                headers["Cache-Control"] = "public, immutable"
            return web.Response(body=data, headers=headers)

        app.router.add_get("/openapi/v2", v2)
        app.router.add_get("/openapi/v3", v3_root)
        app.router.add_get("/openapi/v3/{gv:.+}", v3_doc)
