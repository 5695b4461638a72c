"""Pod Security admission (k8s.io/pod-security-admission), enforce mode, ``latest`` version.

Pods in a namespace labelled ``pod-security.kubernetes.io/enforce`` are rejected with the real message;
workloads' pod templates only produce a ``would violate`` warning, as the real plugin does.
Checks are evaluated in the plugin's order (by check ID) and each reports ``reason (detail)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.cluster.api import errors

if TYPE_CHECKING:
    from tests.cluster.api.resources import Resource
    from tests.cluster.api.store import Store

Json = dict[str, Any]
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")

_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                  "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret", "image"}
_TEMPLATE_RESOURCES = {"deployments.apps", "statefulsets.apps", "replicasets.apps", "daemonsets.apps",
                       "jobs.batch", "replicationcontrollers", "podtemplates"}


def _containers(spec: Json) -> list[Json]:
    return ((spec.get("initContainers") or []) + (spec.get("containers") or [])
            + (spec.get("ephemeralContainers") or []))


def _names(kind: str, names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{kind}{'s' if len(names) > 1 else ''} {quoted}"


def _sc(c: Json) -> Json:
    return c.get("securityContext") or {}


Check = Callable[[Json, Json], "tuple[str, str] | None"]


def _allow_privilege_escalation(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return ("allowPrivilegeEscalation != false",
                f"{_names('container', bad)} must set securityContext.allowPrivilegeEscalation=false")
    return None


def _capabilities_baseline(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad: list[str] = []
    caps: list[str] = []
    for c in _containers(spec):
        added = [a for a in (_sc(c).get("capabilities") or {}).get("add") or [] if a not in _BASELINE_CAPS]
        if added:
            bad.append(c["name"])
            caps += [a for a in added if a not in caps]
    if bad:
        quoted = ", ".join(f'"{a}"' for a in caps)
        return ("non-default capabilities",
                f"{_names('container', bad)} must not include {quoted} in securityContext.capabilities.add")
    return None


def _capabilities_restricted(meta: Json, spec: Json) -> tuple[str, str] | None:
    no_drop: list[str] = []
    bad_add: list[str] = []
    caps: list[str] = []
    for c in _containers(spec):
        cap = _sc(c).get("capabilities") or {}
        if "ALL" not in (cap.get("drop") or []):
            no_drop.append(c["name"])
        added = [a for a in cap.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            bad_add.append(c["name"])
            caps += [a for a in added if a not in caps]
    details = []
    if no_drop:
        details.append(f'{_names("container", no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if bad_add:
        quoted = ", ".join(f'"{a}"' for a in caps)
        details.append(f"{_names('container', bad_add)} must not include {quoted} in "
                       "securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _host_namespaces(meta: Json, spec: Json) -> tuple[str, str] | None:
    used = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return ("host namespaces", ", ".join(used)) if used else None


def _host_path_volumes(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    return ("hostPath volumes", _names("volume", bad)) if bad else None


def _host_ports(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad: list[str] = []
    ports: list[str] = []
    for c in _containers(spec):
        used = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            bad.append(c["name"])
            ports += used
    if bad:
        return ("hostPort", f"{_names('container', bad)} {'uses hostPorts' if len(ports) > 1 else 'uses hostPort'}"
                f" {', '.join(ports)}")
    return None


def _privileged(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("privileged")]
    if bad:
        return ("privileged", f"{_names('container', bad)} must not set securityContext.privileged=true")
    return None


def _restricted_volumes(meta: Json, spec: Json) -> tuple[str, str] | None:
    bad: list[str] = []
    types: list[str] = []
    for v in spec.get("volumes") or []:
        kinds = [k for k in v if k != "name"]
        wrong = [k for k in kinds if k not in _RESTRICTED_VOLUMES]
        if wrong:
            bad.append(v["name"])
            types += [k for k in wrong if k not in types]
    if bad:
        quoted = ", ".join(f'"{t}"' for t in types)
        word = "types" if len(types) > 1 else "type"
        return ("restricted volume types",
                f"{_names('volume', bad)} {'use' if len(bad) > 1 else 'uses'} restricted volume {word} {quoted}")
    return None


def _run_as_non_root(meta: Json, spec: Json) -> tuple[str, str] | None:
    pod_value = (spec.get("securityContext") or {}).get("runAsNonRoot")
    explicit_false = [c["name"] for c in _containers(spec) if _sc(c).get("runAsNonRoot") is False]
    unset = [c["name"] for c in _containers(spec) if _sc(c).get("runAsNonRoot") is None]
    details = []
    if pod_value is False:
        details.append("pod must not set securityContext.runAsNonRoot=false")
    if explicit_false:
        details.append(f"{_names('container', explicit_false)} must not set securityContext.runAsNonRoot=false")
    if pod_value is None and unset:
        details.append(f"pod or {_names('container', unset)} must set securityContext.runAsNonRoot=true")
    return ("runAsNonRoot != true", "; ".join(details)) if details else None


def _run_as_user(meta: Json, spec: Json) -> tuple[str, str] | None:
    details = []
    if (spec.get("securityContext") or {}).get("runAsUser") == 0:
        details.append("pod must not set runAsUser=0")
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if bad:
        details.append(f"{_names('container', bad)} must not set runAsUser=0")
    return ("runAsUser=0", "; ".join(details)) if details else None


def _seccomp_type(sc: Json) -> str | None:
    return (sc.get("seccompProfile") or {}).get("type")


def _seccomp_baseline(meta: Json, spec: Json) -> tuple[str, str] | None:
    details = []
    if _seccomp_type(spec.get("securityContext") or {}) == "Unconfined":
        details.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    bad = [c["name"] for c in _containers(spec) if _seccomp_type(_sc(c)) == "Unconfined"]
    if bad:
        details.append(f'{_names("container", bad)} must not set securityContext.seccompProfile.type to '
                       '"Unconfined"')
    return ("seccompProfile", "; ".join(details)) if details else None


def _seccomp_restricted(meta: Json, spec: Json) -> tuple[str, str] | None:
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = _seccomp_type(spec.get("securityContext") or {})
    details = []
    if pod_type is not None and pod_type not in allowed:
        details.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    bad = [c["name"] for c in _containers(spec)
           if _seccomp_type(_sc(c)) is not None and _seccomp_type(_sc(c)) not in allowed]
    if bad:
        details.append(f'{_names("container", bad)} must not set securityContext.seccompProfile.type to '
                       f'"{_seccomp_type(_sc(next(c for c in _containers(spec) if c["name"] == bad[0])))}"')
    unset = [c["name"] for c in _containers(spec) if _seccomp_type(_sc(c)) is None]
    if pod_type is None and unset:
        details.append(f'pod or {_names("container", unset)} must set securityContext.seccompProfile.type to '
                       '"RuntimeDefault" or "Localhost"')
    return ("seccompProfile", "; ".join(details)) if details else None


# (check ID, level, check). The plugin evaluates the baseline checks, then the restricted ones, each group
# sorted by ID; at the restricted level some restricted checks replace baseline ones (their IDs are in
# _OVERRIDDEN), so a hostPath volume is reported once, as a restricted volume type.
_CHECKS: list[tuple[str, str, Check]] = sorted([
    ("capabilities_baseline", "baseline", _capabilities_baseline),
    ("hostNamespaces", "baseline", _host_namespaces),
    ("hostPathVolumes", "baseline", _host_path_volumes),
    ("hostPorts", "baseline", _host_ports),
    ("privileged", "baseline", _privileged),
    ("seccompProfile_baseline", "baseline", _seccomp_baseline),
], key=lambda c: c[0]) + sorted([
    ("allowPrivilegeEscalation", "restricted", _allow_privilege_escalation),
    ("capabilities_restricted", "restricted", _capabilities_restricted),
    ("restrictedVolumes", "restricted", _restricted_volumes),
    ("runAsNonRoot", "restricted", _run_as_non_root),
    ("runAsUser", "restricted", _run_as_user),
    ("seccompProfile_restricted", "restricted", _seccomp_restricted),
], key=lambda c: c[0])
_OVERRIDDEN = {"capabilities_baseline", "hostPathVolumes", "seccompProfile_baseline"}


def violations(level: str, meta: Json, spec: Json) -> list[str]:
    """``reason (detail)`` strings for every check the pod spec fails at ``level``."""
    if level not in ("baseline", "restricted"):
        return []
    out = []
    for check_id, check_level, check in _CHECKS:
        if check_level == "restricted" and level != "restricted":
            continue
        if level == "restricted" and check_id in _OVERRIDDEN:
            continue
        result = check(meta, spec)
        if result:
            reason, detail = result
            out.append(f"{reason} ({detail})" if detail else reason)
    return out


async def pod_security_admission(store: Store, res: Resource, operation: str, obj: Json, old: Json | None,
                                 warnings: list[str]) -> None:
    if operation != "CREATE" or not res.namespaced:
        return
    if res.key != "pods" and res.key not in _TEMPLATE_RESOURCES:
        return
    namespace = obj["metadata"].get("namespace") or "default"
    try:
        ns = await store.get("namespaces", None, namespace)
    except errors.ApiError:
        return
    level = ((ns.get("metadata") or {}).get("labels") or {}).get(ENFORCE_LABEL, "privileged")
    if level not in LEVELS:
        level = "restricted"  # an invalid level is treated as the most restrictive, as the plugin does
    if res.key == "pods":
        found = violations(level, obj.get("metadata") or {}, obj.get("spec") or {})
        if found:
            raise errors.forbidden("pods", "", obj["metadata"].get("name"),
                                   f'violates PodSecurity "{level}:latest": {", ".join(found)}')
        return
    template = (obj.get("spec") or {}).get("template") or (obj.get("template") or {})
    found = violations(level, template.get("metadata") or {}, template.get("spec") or {})
    if found:
        warnings.append(f'would violate PodSecurity "{level}:latest": {", ".join(found)}')
