"""Kubeconfig resolution with kubectl's rules, without importing the `kubernetes` package.

kubectl merges every file in `KUBECONFIG` (first file to define a name wins, as does the first
`current-context`), resolves relative paths against the file that holds them, applies `--context`,
`--cluster` and `--user` on top of the chosen context, and takes the namespace from `-n`, else the
context, else `default`. Inside a pod with no kubeconfig it uses the service account. Keeping this in
pure Python lets `--help` and the error paths stay fast and lets tests check the rules directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubectl_dr.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Keys whose values are file paths, per kubeconfig section; relative ones are relative to their file.
_PATH_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


@dataclass
class Overrides:
    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None


@dataclass
class ResolvedConfig:
    """What a client needs: a kubeconfig dict reduced to one context, plus where it came from."""

    config: dict[str, Any]
    context_name: str
    cluster_name: str
    user_name: str
    namespace: str
    server: str
    sources: list[Path] = field(default_factory=list)
    in_cluster: bool = False


def _load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"stat {path}: no such file or directory") from None
    except PermissionError:
        raise ConfigError(f"open {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"read {path}: is a directory") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"error loading config file \"{path}\": {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"error loading config file \"{path}\": not a kubeconfig (expected a mapping)")
    for section, keys in _PATH_KEYS.items():
        for entry in data.get(f"{section}s") or []:
            body = (entry or {}).get(section) or {}
            for key in keys:
                value = body.get(key)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    body[key] = str((path.parent / value).resolve())
            exec_cfg = body.get("exec") if section == "user" else None
            if isinstance(exec_cfg, dict):
                cmd = exec_cfg.get("command")
                # kubectl resolves exec commands containing a separator against the file's directory.
                if isinstance(cmd, str) and os.sep in cmd and not os.path.isabs(cmd):
                    exec_cfg["command"] = str((path.parent / cmd).resolve())
    return data


def config_paths(overrides: Overrides, env: Mapping[str, str]) -> tuple[list[Path], bool]:
    """The files to merge, and whether the user named them (a named missing file is an error)."""
    if overrides.kubeconfig:
        return [Path(overrides.kubeconfig).expanduser()], True
    value = env.get("KUBECONFIG", "")
    if value:
        # kubectl skips missing entries of KUBECONFIG silently; so do we.
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p], False
    home = Path(env.get("HOME") or Path.home())
    return [home / ".kube" / "config"], False


def names(overrides: Overrides, section: str, env: Mapping[str, str]) -> list[str]:
    """The names of the kubeconfig's contexts, clusters or users (``section``), as kubectl merges its files."""
    paths, _ = config_paths(overrides, env)
    merged = merge([(p, _load_file(p)) for p in paths if p.exists()])
    return [str(e["name"]) for e in merged.get(section) or [] if isinstance(e, dict) and e.get("name")]


def merge(files: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": [], "current-context": ""}
    for _path, data in files:
        for section in ("clusters", "contexts", "users"):
            known = {e.get("name") for e in merged[section]}
            for entry in data.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") not in known:
                    merged[section].append(entry)
                    known.add(entry.get("name"))
        if not merged["current-context"] and data.get("current-context"):
            merged["current-context"] = data["current-context"]
        if "preferences" in data and "preferences" not in merged:
            merged["preferences"] = data["preferences"]
    return merged


def _named(section: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for entry in section:
        if entry.get("name") == name:
            return entry
    return None


def in_cluster_available(env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR) -> bool:
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and (sa_dir / "token").is_file()


def in_cluster_config(
    env: Mapping[str, str], overrides: Overrides, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ResolvedConfig:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    namespace = overrides.namespace
    if not namespace:
        ns_file = sa_dir / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    config = {
        "clusters": [{"name": "in-cluster", "cluster": {"server": server,
                                                        "certificate-authority": str(sa_dir / "ca.crt")}}],
        "users": [{"name": "in-cluster", "user": {"tokenFile": str(sa_dir / "token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "in-cluster",
                                                        "namespace": namespace}}],
        "current-context": "in-cluster",
    }
    return ResolvedConfig(config, "in-cluster", "in-cluster", "in-cluster", namespace, server, [], True)


def resolve(overrides: Overrides, env: Mapping[str, str] | None = None) -> ResolvedConfig:
    """Apply kubectl's loading rules; raise ConfigError with kubectl's wording when they fail."""
    env = os.environ if env is None else env
    paths, named = config_paths(overrides, env)
    files: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        if not named and not path.exists():
            continue
        files.append((path, _load_file(path)))
    if not files:
        if in_cluster_available(env):
            return in_cluster_config(env, overrides)
        searched = env.get("KUBECONFIG") or str(paths[0])
        raise ConfigError(
            "no configuration has been provided: no kubeconfig found "
            f"(looked at {searched}) and not running inside a pod",
            hint="Pass --kubeconfig FILE, set KUBECONFIG, or run `kubectl config view` to check your setup.",
        )
    merged = merge(files)
    context_name = overrides.context or merged.get("current-context") or ""
    context: dict[str, Any] = {}
    if overrides.context or context_name:
        entry = _named(merged["contexts"], context_name)
        if entry is None:
            if overrides.context:
                names = ", ".join(sorted(str(e.get("name")) for e in merged["contexts"])) or "none"
                raise ConfigError(
                    f"context was not found for specified context: {context_name}",
                    hint=f"Contexts in the kubeconfig: {names}. See `kubectl config get-contexts`.",
                )
            raise ConfigError(f"current-context \"{context_name}\" does not exist in the kubeconfig",
                              hint="Pick one with --context or `kubectl config use-context NAME`.")
        context = dict(entry.get("context") or {})
    cluster_name = overrides.cluster or context.get("cluster") or ""
    user_name = overrides.user or context.get("user") or ""
    cluster_entry = _named(merged["clusters"], cluster_name) if cluster_name else None
    if cluster_entry is None or not (cluster_entry.get("cluster") or {}).get("server"):
        if cluster_name:
            raise ConfigError(f"no server found for cluster \"{cluster_name}\"")
        raise ConfigError("no server found in the kubeconfig: the context names no cluster",
                          hint="Pass --context or --cluster, or run `kubectl config get-contexts`.")
    user_entry = _named(merged["users"], user_name) if user_name else None
    if user_name and user_entry is None:
        raise ConfigError(f"auth info \"{user_name}\" does not exist")
    namespace = overrides.namespace or context.get("namespace") or "default"
    name = context_name or "kubectl-dr"
    reduced = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [user_entry] if user_entry else [{"name": "kubectl-dr-anonymous", "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": cluster_name,
                                                "user": user_name or "kubectl-dr-anonymous",
                                                "namespace": namespace}}],
        "current-context": name,
    }
    return ResolvedConfig(reduced, name, cluster_name, user_name, namespace,
                          str(cluster_entry["cluster"]["server"]), [p for p, _ in files])
