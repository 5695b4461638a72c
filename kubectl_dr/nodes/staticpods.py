"""Reading kubeadm's static pods (through their mirror pods): a container's flags, and where a path the
container sees is on the node."""

from __future__ import annotations

import posixpath
from typing import Any

from kubectl_dr.errors import DrError


def parse_flags(command: list[str]) -> dict[str, str]:
    """`--name=value` and `--name value` flags of a Go program's command line (last one wins)."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(command):
        arg = command[i]
        if arg.startswith("--") or (arg.startswith("-") and len(arg) > 1 and not arg[1].isdigit()):
            name = arg.lstrip("-")
            if "=" in name:
                key, value = name.split("=", 1)
                flags[key] = value
            elif i + 1 < len(command) and not command[i + 1].startswith("-"):
                flags[name] = command[i + 1]
                i += 1
            else:
                flags[name] = "true"
        i += 1
    return flags


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The container of that name, else the first one."""
    containers = (doc.get("spec") or {}).get("containers") or []
    for c in containers:
        if c.get("name") == name:
            return dict(c)
    if containers:
        return dict(containers[0])
    raise DrError(f"the {name} static pod manifest has no containers")


def command_of(doc: dict[str, Any], name: str) -> list[str]:
    c = container(doc, name)
    return [str(a) for a in (c.get("command") or [])] + [str(a) for a in (c.get("args") or [])]


def host_path(doc: dict[str, Any], container_path: str, container_name: str) -> str:
    """Where a path inside a static pod's container is on the node (through its hostPath volume)."""
    c = container(doc, container_name)
    volumes = {v.get("name"): v for v in (doc.get("spec") or {}).get("volumes") or []}
    best: tuple[int, str, str] | None = None
    for mount in c.get("volumeMounts") or []:
        root = posixpath.normpath(str(mount.get("mountPath", "/")))
        inside = container_path == root or container_path.startswith(root.rstrip("/") + "/")
        volume = volumes.get(mount.get("name")) or {}
        if inside and "hostPath" in volume and (best is None or len(root) > best[0]):
            best = (len(root), root, str(volume["hostPath"]["path"]))
    if best is None:
        raise DrError(f"the {container_name} static pod keeps {container_path} on no hostPath volume, so kubectl dr "
                      "cannot reach it on the node's disk")
    _, root, host = best
    rest = container_path[len(root):].lstrip("/")
    return posixpath.normpath(posixpath.join(host, rest)) if rest else posixpath.normpath(host)
