"""Which encryption-at-rest keys a snapshot's data needs, and whether the cluster has them now.

kube-apiserver encrypts Secrets (and whatever else its `--encryption-provider-config` lists) before they
reach etcd: a snapshot holds `k8s:enc:aescbc:v1:KEYNAME:…` blobs that only that key opens. Restore such a
snapshot into a cluster whose config lost the key and every Secret is unreadable (the API server answers
"Internal error occurred: unable to transform key"), silently, until someone reads one. So every snapshot
records a fingerprint of the config's keys, and a restore's preflight compares it with the cluster's.

Recorded, never the secrets themselves: per resource group, each key as provider, name and the SHA-256 of
`provider:name:secret` (the name is part of the stored prefix, so a renamed key is a different key), and
whether `identity` (plain text) is among the providers; plus one SHA-256 over all of it. "none" when the
API server has no encryption config.

The rule of the check follows the API server: it reads an object with whichever configured key its
prefix names, and plain text only when `identity` is a provider. So the cluster can read a snapshot when,
for each resource, every key the snapshot's config had is still configured, and `identity` is configured
when the snapshot's config allowed plain text (or had no config at all).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubectl_dr.console import Console
from kubectl_dr.errors import ApiError
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.membership import host_path
from kubectl_dr.etcd.topology import ETCD_NAMESPACE, parse_flags
from kubectl_dr.kube.client import Kube
from kubectl_dr.nodes import HostMount, start_host_pod
from kubectl_dr.runs import Heartbeat, Run

FLAG = "encryption-provider-config"
APISERVER_SELECTOR = "component=kube-apiserver,tier=control-plane"
KEYED_PROVIDERS = ("aescbc", "aesgcm", "secretbox")
NONE = "none"


class EncryptionMismatch(EtcdError):
    """The snapshot's encrypted data could not be read with the cluster's current encryption keys."""


@dataclass(frozen=True)
class Key:
    provider: str  # aescbc, aesgcm, secretbox, kms
    name: str
    fingerprint: str  # SHA-256 of provider:name:secret (kms: provider:name:endpoint)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.name}"

    def to_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "name": self.name, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Group:
    """One `resources` entry: the resources it covers and its providers in order (the first one writes)."""

    resources: tuple[str, ...]
    keys: tuple[Key, ...]
    identity: bool
    writes_with: str  # "identity" or provider/name of the first provider

    def covers(self, resource: str) -> bool:
        group = resource.split(".", 1)[1] if "." in resource else ""
        return any(r == resource or r == "*.*" or (r == f"*.{group}") for r in self.resources)

    def to_dict(self) -> dict[str, Any]:
        return {"resources": list(self.resources), "keys": [k.to_dict() for k in self.keys],
                "identity": self.identity, "writesWith": self.writes_with}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Group:
        keys = tuple(Key(str(k["provider"]), str(k["name"]), str(k["fingerprint"])) for k in data.get("keys") or [])
        return cls(tuple(data.get("resources") or []), keys,
                   bool(data.get("identity")), str(data.get("writesWith") or ""))


@dataclass
class Fingerprint:
    """What a snapshot records (and what a cluster has now) under `encryption` in the backup's details."""

    state: str  # "none" (no config), "configured", or "unknown" (could not be read: `reason` says why)
    fingerprint: str  # "none", SHA-256 hex, or "" when unknown
    node: str | None = None
    path: str | None = None  # the config file on the node
    groups: list[Group] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "fingerprint": self.fingerprint, "node": self.node,
                               "configPath": self.path, "groups": [g.to_dict() for g in self.groups]}
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fingerprint:
        if not data:
            return cls("unknown", "", reason="the snapshot recorded no encryption fingerprint (made by an older "
                                             "kubectl dr, or directly through --endpoints)")
        return cls(str(data.get("state") or "unknown"), str(data.get("fingerprint") or ""), data.get("node"),
                   data.get("configPath"), [Group.from_dict(g) for g in data.get("groups") or []],
                   data.get("reason"))

    def group_for(self, resource: str) -> Group | None:
        return next((g for g in self.groups if g.covers(resource)), None)

    def where(self) -> str:
        return f"{self.path} on node {self.node}" if self.path else f"node {self.node}"


# --- parsing ----------------------------------------------------------------------------------------
def _key_fingerprint(provider: str, name: str, secret: str) -> str:
    return hashlib.sha256(f"{provider}:{name}:{secret}".encode()).hexdigest()


def fingerprint_config(text: bytes | str, *, node: str | None = None, path: str | None = None) -> Fingerprint:
    """Fingerprint an EncryptionConfiguration file (apiserver.config.k8s.io/v1)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EtcdError(f"the encryption config {path or ''} on node {node} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise EtcdError(f"the encryption config {path or ''} on node {node} is not an EncryptionConfiguration")
    groups: list[Group] = []
    for entry in doc.get("resources") or []:
        keys: list[Key] = []
        identity = False
        order: list[str] = []
        for provider in entry.get("providers") or []:
            for kind, spec in (provider or {}).items():
                spec = spec or {}
                if kind == "identity":
                    identity = True
                    order.append("identity")
                elif kind in KEYED_PROVIDERS:
                    for k in spec.get("keys") or []:
                        key = Key(kind, str(k.get("name")), _key_fingerprint(kind, str(k.get("name")),
                                                                              str(k.get("secret"))))
                        keys.append(key)
                        order.append(key.label)
                elif kind == "kms":
                    name = str(spec.get("name"))
                    key = Key("kms", name, _key_fingerprint("kms", name, str(spec.get("endpoint"))))
                    keys.append(key)
                    order.append(key.label)
        groups.append(Group(tuple(str(r) for r in entry.get("resources") or []), tuple(keys), identity,
                            order[0] if order else "identity"))
    canonical = json.dumps([g.to_dict() for g in groups], sort_keys=True, separators=(",", ":"))
    return Fingerprint("configured", hashlib.sha256(canonical.encode()).hexdigest(), node, path, groups)


# --- reading it from the cluster ----------------------------------------------------------------------
def _apiserver_pods(kube: Kube) -> list[dict[str, Any]]:
    found = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=APISERVER_SELECTOR)
    return [p for p in found.get("items") or [] if not (p.get("metadata") or {}).get("deletionTimestamp")]


def config_path(kube: Kube, node: str) -> str | Fingerprint:
    """Where on the node the API server reads its encryption config (from its mirror pod's flag and hostPath),
    or the fingerprint itself when there is nothing to read ("none": no flag; "unknown": no API server)."""
    pod = next((p for p in _apiserver_pods(kube) if (p.get("spec") or {}).get("nodeName") == node), None)
    if pod is None:
        return Fingerprint("unknown", "", node, reason=f"no kube-apiserver static pod runs on node {node}")
    container = next((c for c in pod["spec"].get("containers") or [] if c.get("name") == "kube-apiserver"),
                     (pod["spec"].get("containers") or [{}])[0])
    flags = parse_flags([str(a) for a in (container.get("command") or []) + (container.get("args") or [])])
    inside = flags.get(FLAG)
    if not inside:
        return Fingerprint(NONE, NONE, node)
    return host_path(pod, inside, str(container.get("name")))


def read(kube: Kube, node: str, *, namespace: str, run: Run, console: Console, helper_image: str = "busybox",
         ) -> Fingerprint:
    """The fingerprint of the encryption config kube-apiserver uses on this node.

    The file is read (checked by size and SHA-256) through a short-lived pod that mounts its directory
    read-only. No flag: "none", no pod. (A snapshot reads it in its own pod: snapshot_exposure.py.)"""
    path = config_path(kube, node)
    if isinstance(path, Fingerprint):
        return path
    heartbeat = Heartbeat(console.warn)
    host = start_host_pod(kube, node=node, namespace=namespace, mounts=[HostMount(posixpath.dirname(path))],
                          image=helper_image, purpose="encryption-config", run=run, heartbeat=heartbeat,
                          console=console)
    try:
        data = host.read(path)
    finally:
        heartbeat.stop()
        host.helper.delete(wait=True)
    if data is None:
        raise EtcdError(f"kube-apiserver on node {node} names {FLAG} {path}, but that file is not on the node")
    return fingerprint_config(data, node=node, path=path)


def read_cluster(kube: Kube, *, namespace: str, run: Run, console: Console, helper_image: str = "busybox",
                 ) -> list[Fingerprint]:
    """The current fingerprint on every node that runs kube-apiserver (each must be able to read the data)."""
    try:
        nodes = sorted({str(p["spec"].get("nodeName")) for p in _apiserver_pods(kube)})
    except ApiError as exc:
        if exc.status == 403:
            exc.hint = "Reading the encryption config needs list on pods in kube-system (the API servers' mirror pods)."
        raise
    if not nodes:
        raise EtcdError("no kube-apiserver static pods in kube-system: cannot tell which encryption-at-rest keys "
                        "the API servers use")
    return [read(kube, n, namespace=namespace, run=run, console=console, helper_image=helper_image) for n in nodes]


# --- the check ----------------------------------------------------------------------------------------
HINT = ("Put the keys the snapshot was taken with back into the encryption config on every control-plane node "
        "(as further providers after the current first one, so the API server can read with them), restart the "
        "API servers, and run the restore again. The config is part of `kubectl dr control-plane backup`.")


def check(snapshot: dict[str, Any] | Fingerprint | None, current: list[Fingerprint]) -> list[str]:
    """Raise EncryptionMismatch when the cluster could not decrypt the snapshot's data; return warnings."""
    snap = snapshot if isinstance(snapshot, Fingerprint) else Fingerprint.from_dict(snapshot)
    warnings: list[str] = []
    if snap.state == "unknown":
        return [f"the snapshot's encryption-at-rest keys are unknown ({snap.reason}): whether its Secrets can be "
                "decrypted after the restore cannot be checked"]
    problems: list[str] = []
    for now in current:
        if now.state == "unknown":
            warnings.append(f"the encryption config on node {now.node} could not be read ({now.reason})")
            continue
        if now.fingerprint == snap.fingerprint:
            continue
        problems += _differences(snap, now)
    if problems:
        before = ("the snapshot was taken without encryption at rest" if snap.state == NONE else
                  f"the snapshot was taken with the encryption config {snap.where()} (fingerprint "
                  f"{snap.fingerprint[:16]})")
        raise EncryptionMismatch(
            "the snapshot's Secrets could not be decrypted by this cluster's API servers after a restore: "
            f"{before}, and now:\n" + "\n".join(f"  {p}" for p in problems),
            hint=HINT if snap.state != NONE else (
                "Add `- identity: {}` as the last provider for these resources on every control-plane node and "
                "restart the API servers, so data written without encryption can be read; then restore again."))
    return warnings


def _differences(snap: Fingerprint, now: Fingerprint) -> list[str]:
    resources = {"secrets"} | {r for g in snap.groups + now.groups for r in g.resources if "*" not in r}
    problems: list[str] = []
    for resource in sorted(resources):
        old, new = snap.group_for(resource), now.group_for(resource)
        plain_before = old is None or old.identity  # stored as plain text, or may hold plain-text objects
        have = set(new.keys) if new else set()
        missing = [k for k in (old.keys if old else ()) if k not in have]
        renamed = [k for k in missing if any(h.provider == k.provider and h.name == k.name for h in have)]
        if missing:
            detail = ", ".join(f"{k.label}" + (" (same name, different secret)" if k in renamed else "")
                               for k in missing)
            problems.append(f"{resource}: node {now.node} ({now.path or 'no encryption config'}) lacks the key(s) "
                            f"{detail} that {resource} in the snapshot may be encrypted with")
        if plain_before and new is not None and not new.identity:
            problems.append(f"{resource}: node {now.node} ({now.path}) has no identity provider, so {resource} stored "
                            "in plain text in the snapshot could not be read")
    return problems


def preflight(kube: Kube, snapshot_details: dict[str, Any], *, namespace: str, run: Run, console: Console,
              helper_image: str = "busybox") -> list[str]:
    """For `etcd restore`'s preflight: read the cluster's encryption config on every API server node and
    compare it with what the snapshot recorded (`manifest.details["encryption"]`).

    Raises EncryptionMismatch (what cannot be decrypted, on which node, what to do) before anything is
    changed; returns warnings to print when the check could not be made in full."""
    return check(snapshot_details.get("encryption"), read_cluster(kube, namespace=namespace, run=run,
                                                                  console=console, helper_image=helper_image))
