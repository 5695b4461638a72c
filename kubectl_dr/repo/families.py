"""An application backup and the pvc backups of its claims: one family, kept and deleted together.

`namespace backup` writes each bound claim's data as a pvc backup of its own and names it in the
application backup's manifest (``details.claims[].backup``). Deleting one of those alone, or pruning it
by its claim's series, would leave the application backup unrestorable; deleting the application backup
alone would leave its claims' data behind. So a claim's backup is decided by the application backups
that name it, never by its own series.

A repository is untrusted input: an application backup's manifest names a claim's backup only if that
backup is a pvc backup of the same namespace and claim. A crafted manifest naming any other backup
cannot make a delete or a prune take it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.repo import ids
from kubectl_dr.repo.manifest import Manifest

APP_TYPE = "app"  # the type `namespace backup` writes (kubectl_dr.apps.TYPE; the repository sits below it)
CLAIM_TYPE = "pvc"


@dataclass(frozen=True)
class ClaimRef:
    backup: str
    namespace: str
    name: str


def claim_refs(manifest: Manifest) -> list[ClaimRef]:
    """The claims' backups an application backup names (in its order, once each); none for other types."""
    if manifest.type != APP_TYPE:
        return []
    claims = manifest.details.get("claims")
    found: dict[str, ClaimRef] = {}
    for claim in claims if isinstance(claims, list) else []:
        if not isinstance(claim, dict):
            continue
        backup, namespace, name = claim.get("backup"), claim.get("namespace"), claim.get("name")
        if not (isinstance(backup, str) and isinstance(namespace, str) and isinstance(name, str)):
            continue
        if ids.id_problem(backup) is None:
            found.setdefault(backup, ClaimRef(backup, namespace, name))
    return list(found.values())


def is_claim_of(ref: ClaimRef, manifest: Manifest) -> bool:
    """Whether ``manifest`` is the backup ``ref`` names: a pvc backup of that namespace and claim."""
    return (manifest.id == ref.backup and manifest.type == CLAIM_TYPE
            and manifest.source.get("namespace") == ref.namespace and manifest.source.get("pvc") == ref.name)


@dataclass
class Families:
    """Who names whom among a repository's backups."""

    claims: dict[str, list[str]] = field(default_factory=dict)  # app backup ID → its claims' backups present
    missing: dict[str, list[str]] = field(default_factory=dict)  # app backup ID → claims' backups it names, gone
    owners: dict[str, list[str]] = field(default_factory=dict)  # claim backup ID → the app backups naming it

    def owners_except(self, claim: str, excluded: Iterable[str]) -> list[str]:
        skip = set(excluded)
        return [a for a in self.owners.get(claim, []) if a not in skip]


def families(manifests: Iterable[Manifest]) -> Families:
    everything = list(manifests)
    by_id = {m.id: m for m in everything}
    result = Families()
    for app in everything:
        if app.type != APP_TYPE:
            continue
        for ref in claim_refs(app):
            target = by_id.get(ref.backup)
            if target is None:
                result.missing.setdefault(app.id, []).append(ref.backup)
            elif is_claim_of(ref, target):
                result.claims.setdefault(app.id, []).append(ref.backup)
                result.owners.setdefault(ref.backup, []).append(app.id)
            # Anything else it names is not its claim's backup (a crafted or damaged manifest): left alone.
    return result


def deletion_record(app: Manifest, claims: list[str], when: str, version: str) -> dict[str, Any]:
    """What is written beside an application backup before its claims' backups go."""
    return {"apiVersion": "kubectl-dr/v1", "kind": "Deletion", "id": app.id, "startedAt": when,
            "claimBackups": claims, "toolVersion": version}
