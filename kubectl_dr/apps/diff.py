"""`namespace diff`: what a restore of a backup would create, change (field by field) and leave alone.

Only the fields the backup holds are compared: what the server fills in (defaults, allocated IPs) is not
a difference a restore would make. In the maps no server fills (a ConfigMap's or Secret's data, labels,
annotations but those controllers write), a key only the live object has is a difference too: a restore
with --existing=update removes it. Reads only; the claims' contents are compared by the `pvc diff` job
(a read-only pod per claim that exists; --no-volumes leaves them out).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.apps import apply, mapping
from kubectl_dr.apps.cleaning import clean, ref
from kubectl_dr.apps.resources import discover
from kubectl_dr.apps.source import find, read
from kubectl_dr.errors import ApiError
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import Repository
from kubectl_dr.session import Session
from kubectl_dr.units import count

Json = dict[str, Any]
# The restore's own marks and what the target allocates: never a difference.
IGNORED = {"metadata.annotations." + mapping.RESTORED_FROM, "spec.clusterIP", "spec.clusterIPs", "spec.volumeName"}
# Maps whose every key is the user's: one only the live object has is what an update would take away.
USER_MAPS = (("data",), ("binaryData",), ("stringData",), ("metadata", "labels"), ("metadata", "annotations"))
# Annotations controllers write (a claim's binder, a Deployment's revision, kubectl apply's record), in either
# object: not a difference a restore makes or undoes.
CONTROLLER_ANNOTATIONS = (*mapping.CLAIM_BIND_ANNOTATIONS, "deployment.kubernetes.io/revision",
                          "kubectl.kubernetes.io/last-applied-configuration")


@dataclass
class DiffOptions:
    namespace: str
    source: str
    to: str | None = None
    volumes: bool = True  # compare the claims' contents too (a read-only pod per claim)
    image: str | None = None


@dataclass
class ObjectDiff:
    object: str
    change: str  # create, change, same
    fields: list[Json] = field(default_factory=list)  # {"field", "backup", "live"}


@dataclass
class DiffResult:
    backup: str
    namespace: str
    objects: list[ObjectDiff]
    claims: list[Json]

    @property
    def identical(self) -> bool:
        """Every object as the backup has it, and every claim whose contents were compared holds them as they are
        (a claim not compared, --no-volumes, is said in its line: its contents are not vouched for)."""
        return (all(o.change == "same" for o in self.objects)
                and all(c["pvcDiff"]["identical"] for c in self.claims if "pvcDiff" in c))

    def to_dict(self) -> Json:
        return {"kind": "NamespaceDiff", "backup": self.backup, "namespace": self.namespace,
                "identical": self.identical,
                "objects": [{"object": o.object, "change": o.change, "fields": o.fields} for o in self.objects],
                "claims": self.claims}

    def summary(self) -> str:
        lines = [f"--- namespace {self.namespace} (live)", f"+++ backup {self.backup}"]
        for o in self.objects:
            if o.change == "create":
                lines.append(f"+ {o.object}")
            elif o.change == "change":
                lines.append(f"~ {o.object}")
                lines.extend(f"    {f['field']}: {_show(f['live'])} → {_show(f['backup'])}" for f in o.fields)
        for claim in self.claims:
            lines.append(f"  claim {claim['name']}: contents: {claim['compare']}")
        n = {c: sum(1 for o in self.objects if o.change == c) for c in ("create", "change", "same")}
        lines.append(f"a restore would create {count(n['create'], 'object')}, change {n['change']} "
                     f"(with --existing=update) and leave {n['same']} alone")
        return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    return "<none>" if value is None else str(value)


def compare(wanted: Json, live: Json) -> list[Json]:
    """The leaves of ``wanted`` whose value ``live`` does not have (annotation and label keys may hold dots,
    so the leaves are looked up by walking the same keys)."""
    differences = []
    for path, keys, value in _walk(wanted, []):
        if _ignored(path):
            continue
        current: Any = live
        for key in keys:
            current = current.get(key) if isinstance(current, dict) else None
        if current != value:
            differences.append({"field": path, "backup": value, "live": current})
    for where in USER_MAPS:
        ours, theirs = _at(wanted, where), _at(live, where)
        for key in sorted(set(theirs) - set(ours)):
            path = ".".join((*where, key))
            if not _ignored(path):
                differences.append({"field": path, "backup": None, "live": theirs[key]})
    return differences


def _ignored(path: str) -> bool:
    return (path in IGNORED or path.startswith("metadata.annotations.kubectl-dr.io/")
            or any(path == "metadata.annotations." + a for a in CONTROLLER_ANNOTATIONS))


def _at(obj: Json, keys: tuple[str, ...]) -> dict[str, Any]:
    """The map at ``keys`` ({} where there is none)."""
    found: Any = obj
    for key in keys:
        found = found.get(key) if isinstance(found, dict) else None
    return found if isinstance(found, dict) else {}


def comparable(obj: Json) -> Json:
    """A Service without the node ports the server allocates: a restore clears them (unless
    --preserve-nodeports) and the target allocates its own, so a different number is not a change."""
    if obj.get("kind") != "Service":
        return obj
    out = copy.deepcopy(obj)
    spec = out.get("spec") or {}
    spec.pop("healthCheckNodePort", None)
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.pop("nodePort", None)
    return out


def _walk(value: Any, keys: list[str]) -> list[tuple[str, list[str], Any]]:
    if isinstance(value, dict) and value:
        out = []
        for key, item in value.items():
            out.extend(_walk(item, [*keys, str(key)]))
        return out
    return [(".".join(keys), keys, value)]


def run(session: Session, repo: Repository, opts: DiffOptions) -> DiffResult:
    kube = session.kube
    identity, _ = try_cluster_identity(kube)
    app = read(repo, find(repo, opts.source, opts.namespace, identity.uid if identity else None))
    target = opts.to or opts.namespace
    maps = mapping.Mapping({opts.namespace: target})
    catalog = discover(kube)
    results: list[ObjectDiff] = []
    for obj in app.of_namespace(opts.namespace):
        wanted = mapping.map_names(obj, maps)
        rtype = catalog.for_object(wanted)
        live = apply.current(kube, rtype, wanted) if rtype is not None else None
        if live is None:
            results.append(ObjectDiff(ref(wanted), "create"))
            continue
        live_clean, _ = clean(live)
        fields = compare(comparable(wanted), comparable(live_clean))
        results.append(ObjectDiff(ref(wanted), "change" if fields else "same", fields))
    claims = [_claim(session, repo, c, target, opts) for c in app.claims(opts.namespace)]
    return DiffResult(app.id, target, results, claims)


def _claim(session: Session, repo: Repository, claim: Json, target: str, opts: DiffOptions) -> Json:
    """The claim's contents against its backup, as `pvc diff` compares them (a read-only pod), when the claim
    exists and ``opts.volumes``; else what a restore would do."""
    kube = session.kube
    out: Json = {"name": claim["name"], "backup": claim["backup"]}
    try:
        kube.get(f"/api/v1/namespaces/{target}/persistentvolumeclaims/{claim['name']}")
    except ApiError as exc:
        if exc.status != 404:
            raise
        entries = count(int(claim.get("entries") or 0), "entry", "entries")
        out["compare"] = f"the claim would be created and its {entries} restored"
        return out
    if not opts.volumes:
        out["compare"] = f"kubectl dr pvc diff {claim['name']} -n {target} --from {claim['backup']}"
        return out
    from kubectl_dr.volumes import diff as pvc_diff

    options = pvc_diff.DiffOptions(target, claim["name"], claim["backup"])
    if opts.image:
        options.image = opts.image
    result = pvc_diff.run(session, repo, options)
    out["compare"] = result.summary().strip().splitlines()[-1]
    out["pvcDiff"] = result.to_dict()
    return out
