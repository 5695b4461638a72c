"""Decoding checks against the real schemas: unknown fields and wrong JSON types.

A real server decodes request bodies into Go structs: a wrong JSON type always fails
(``json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32``), unknown
fields fail only under ``fieldValidation=Strict`` (``strict decoding error: unknown field "spec.foo"``), are
reported in ``Warning`` headers under ``Warn`` (the default) and dropped silently under ``Ignore``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.cluster.api.errors import ApiError, bad_request
from tests.cluster.api.openapi import OpenAPI

if TYPE_CHECKING:
    from tests.cluster.api.rest import Context

Json = dict[str, Any]
_ANY_NUMBER_STRING = {"io.k8s.apimachinery.pkg.api.resource.Quantity"}


@lru_cache(maxsize=4)
def openapi_for(v2_path: Path) -> OpenAPI:
    return OpenAPI(v2_path)


@dataclass
class _Walk:
    defs: Json
    unknown: list[str] = field(default_factory=list)


class TypeMismatch(Exception):
    def __init__(self, json_type: str, struct: str, path: str, go_type: str) -> None:
        super().__init__(f"json: cannot unmarshal {json_type} into Go struct field {struct}.{path} "
                         f"of type {go_type}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(ref: str) -> str:
    """``#/definitions/io.k8s.api.core.v1.Container`` → ``v1.Container`` (Go's package.Type)."""
    parts = ref.rsplit("/", 1)[-1].split(".")
    return ".".join(parts[-2:])


def _go_type(schema: Json) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name.endswith("IntOrString"):
            return "intstr.IntOrString"
        if name.endswith("Quantity"):
            return "resource.Quantity"
        if name.endswith(".Time"):
            return "v1.Time"
        return _short(schema["$ref"])
    kind = schema.get("type")
    if kind == "integer":
        return str(schema.get("format", "int64"))
    if kind == "number":
        return "float64"
    if kind == "boolean":
        return "bool"
    if kind == "array":
        return "[]" + _go_type(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        return "map[string]" + _go_type(schema["additionalProperties"])
    return str(kind or "interface {}")


def _walk(w: _Walk, value: Any, schema: Json, path: str, struct: str) -> None:
    if value is None:
        return
    ref_name = ""
    if "$ref" in schema:
        ref_name = schema["$ref"].rsplit("/", 1)[-1]
        resolved = w.defs.get(ref_name, {})
    else:
        resolved = schema
    if ref_name in _ANY_NUMBER_STRING:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))
        return
    kind = resolved.get("type")
    fmt = resolved.get("format")
    if fmt == "int-or-string":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))
        return
    if "properties" in resolved:
        if not isinstance(value, dict):
            raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))
        name = ref_name.rsplit(".", 1)[-1] or struct
        props = resolved["properties"]
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key not in props:
                w.unknown.append(sub_path)
                continue
            _walk(w, sub, props[key], sub_path, name)
        return
    if kind == "object":
        if resolved.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" not in resolved:
            return  # RawExtension / free-form JSON
        if not isinstance(value, dict):
            raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))
        for key, sub in value.items():
            _walk(w, sub, resolved["additionalProperties"], f"{path}[{key}]", struct)
        return
    if kind == "array":
        if not isinstance(value, list):
            raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))
        for i, sub in enumerate(value):
            _walk(w, sub, resolved.get("items", {}), f"{path}[{i}]", struct)
        return
    ok = {
        "string": isinstance(value, str),
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }.get(str(kind), True)
    if not ok:
        raise TypeMismatch(_json_type(value), struct, path, _go_type(schema))


def definition_for(api: OpenAPI, group: str, version: str, kind: str) -> str | None:
    for name, schema in api.definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if gvk.get("group") == group and gvk.get("version") == version and gvk.get("kind") == kind:
                return str(name)
    return None


@lru_cache(maxsize=256)
def _definition_cached(v2_path: Path, group: str, version: str, kind: str) -> str | None:
    return definition_for(openapi_for(v2_path), group, version, kind)


def check(api_dir: Path, group: str, version: str, kind: str, obj: Json) -> list[str]:
    """Unknown field paths of ``obj``; raises ApiError (400) on a wrong JSON type."""
    v2_path = api_dir / "openapi-v2.json"
    name = _definition_cached(v2_path, group, version, kind)
    if name is None:
        return []
    api = openapi_for(v2_path)
    walk = _Walk(api.definitions)
    try:
        _walk(walk, obj, {"$ref": f"#/definitions/{name}"}, "", kind)
    except TypeMismatch as exc:
        raise cannot_handle(kind, version, str(exc)) from exc
    return walk.unknown


def cannot_handle(kind: str, version: str, detail: str) -> ApiError:
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}')


def validate_request_object(ctx: Context, obj: Json) -> None:
    mode = ctx.query.get("fieldValidation", "Warn")
    if mode not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f'fieldValidation parameter unsupported: "{mode}"')
    res = ctx.res
    kind, group, version = res.kind, res.group, ctx.info.version
    unknown = check(ctx.config.resolved_api_dir, group, version, kind, obj)
    if not unknown or mode == "Ignore":
        return
    messages = [f'unknown field "{path}"' for path in unknown]
    if mode == "Strict":
        raise cannot_handle(kind, version, "strict decoding error: " + ", ".join(messages))
    ctx.warnings.extend(messages)
