"""From a pod spec to a container launch: command/args, environment, user and groups.

Follows the kubelet and containerd rules the product relies on:
- ``command`` replaces the image entrypoint (and drops the image cmd); ``args`` replaces the cmd;
  ``$(VAR)`` references are expanded from the container's environment, ``$$`` escapes;
- env: image env, then ``env``/``envFrom`` (fieldRef, configMapKeyRef, secretKeyRef), HOSTNAME;
- user: container securityContext over pod securityContext over the image (root); the gid is
  runAsGroup or 0; fsGroup and supplementalGroups become supplementary groups;
- runAsNonRoot with an effective uid 0 refuses to start the container (CreateContainerConfigError).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

from tests.cluster.node.images import Image
from tests.cluster.node.sandbox import Credentials
from tests.cluster.node.volumes import field_value

Json = dict[str, Any]
Getter = Callable[[str, "str | None", str], Awaitable[Json]]


class ContainerConfigError(Exception):
    """The container cannot be created: waiting reason CreateContainerConfigError with this message."""


def pod_ref(pod: Json) -> str:
    """format.Pod: ``name_namespace(uid)``, how the kubelet names a pod in messages."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', 'default')}({meta.get('uid', '')})"


def security_value(pod: Json, container: Json, key: str) -> Any:
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = ((pod.get("spec") or {}).get("securityContext") or {}).get(key)
    return value


def credentials(pod: Json, container: Json) -> Credentials:
    uid = security_value(pod, container, "runAsUser")
    uid = 0 if uid is None else int(uid)
    if security_value(pod, container, "runAsNonRoot") and uid == 0:
        raise ContainerConfigError(
            f'container has runAsNonRoot and image will run as root (pod: "{pod_ref(pod)}", '
            f"container: {container['name']})")
    gid = security_value(pod, container, "runAsGroup")
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    groups: list[int] = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or [] if int(g) not in groups]
    return Credentials(uid, 0 if gid is None else int(gid), groups)


async def environment(pod: Json, container: Json, image: Image, get: Getter) -> dict[str, str]:
    namespace = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = dict(image.env)
    env["HOSTNAME"] = pod["metadata"]["name"]
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, resource in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = source.get(kind)
            if ref is None:
                continue
            try:
                obj = await get(resource, namespace, ref["name"])
            except Exception as e:
                if ref.get("optional"):
                    continue
                singular = "configmap" if resource == "configmaps" else "secret"
                raise ContainerConfigError(f'{singular} "{ref["name"]}" not found') from e
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode() if resource == "secrets" else str(v)
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind = "configMapKeyRef" if "configMapKeyRef" in vf else "secretKeyRef"
            ref = vf[kind]
            resource = "configmaps" if kind == "configMapKeyRef" else "secrets"
            singular = "configmap" if kind == "configMapKeyRef" else "secret"
            try:
                obj = await get(resource, namespace, ref["name"])
                raw = (obj.get("data") or {})[ref["key"]]
            except Exception as e:
                if ref.get("optional"):
                    continue
                if isinstance(e, KeyError):
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {singular.capitalize()} "
                        f"{namespace}/{ref['name']}") from e
                raise ContainerConfigError(f'{singular} "{ref["name"]}" not found') from e
            env[name] = base64.b64decode(raw).decode() if resource == "secrets" else str(raw)
        elif "resourceFieldRef" in vf:
            env[name] = "0"
    return env


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known variables are replaced, unknown ones kept, $$ → $."""
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _REF.sub(repl, text)


def argv(container: Json, image: Image, env: dict[str, str]) -> list[str]:
    command = container.get("command")
    args = container.get("args")
    out = [*command, *(args or [])] if command else [*image.entrypoint, *(args if args else image.cmd)]
    return [expand(a, env) for a in out]
