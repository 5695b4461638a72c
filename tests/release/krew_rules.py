"""krew's structural validation of a plugin manifest (internal/index/validation in krew), in Python.

The index's CI runs exactly these checks; a manifest that fails them is refused by `krew install`.
"""

from __future__ import annotations

import re
from typing import Any

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
SAFE_NAME = re.compile(r"^[\w-]+$")
SHA256 = re.compile(r"^[a-f0-9]{64}$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
# krew's semver parser: "v" followed by a semantic version.
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def validate(name: str, manifest: dict[str, Any]) -> list[str]:
    """Return krew's complaints (empty when the manifest is valid)."""
    errors: list[str] = []
    spec = manifest.get("spec") or {}
    if manifest.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion={manifest.get('apiVersion')!r} not supported")
    if manifest.get("kind") != "Plugin":
        errors.append(f"kind={manifest.get('kind')!r}, only 'Plugin' is supported")
    if not SAFE_NAME.match(name) or name.upper() in WINDOWS_FORBIDDEN:
        errors.append(f"the plugin name {name!r} is not allowed")
    if (manifest.get("metadata") or {}).get("name") != name:
        errors.append(f"plugin should be named {name!r}")
    short = spec.get("shortDescription") or ""
    if not short:
        errors.append("should have a short description")
    if "\n" in short or "\r" in short:
        errors.append("should not have line breaks in short description")
    platforms = spec.get("platforms") or []
    if not platforms:
        errors.append("should have a platform specified")
    version = spec.get("version") or ""
    if not version:
        errors.append("should have a version specified")
    elif not SEMVER.match(version):
        errors.append(f"failed to parse plugin version {version!r}")
    for platform in platforms:
        errors.extend(_platform(platform))
    return errors


def _platform(p: dict[str, Any]) -> list[str]:
    errors = []
    if not p.get("uri"):
        errors.append("`uri` has to be set")
    sha = p.get("sha256") or ""
    if not sha:
        errors.append("`sha256` sum has to be set")
    elif not SHA256.match(sha):
        errors.append(f"`sha256` value {sha} is not valid")
    if not p.get("bin"):
        errors.append("`bin` has to be set")
    files = p.get("files")
    if files is not None:
        if not files:
            errors.append("`files` has to be unspecified or non-empty")
        for op in files:
            if not op.get("from") or not op.get("to"):
                errors.append("`from` and `to` fields have to be set")
    selector = p.get("selector")
    if selector is None:
        errors.append("nil selector is not supported")
    else:
        labels = selector.get("matchLabels")
        exprs = selector.get("matchExpressions")
        if not labels and not exprs:
            errors.append("empty selector is not supported")
        keys = list((labels or {}).keys()) + [e.get("key") for e in exprs or []]
        errors.extend(f"key {k!r} not supported" for k in keys if k not in ("os", "arch"))
    return errors
