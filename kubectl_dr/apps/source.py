"""Finding and reading an application backup: `latest` of a namespace (this cluster's), or an ID; its
parts read to the end, so their size and SHA-256 are checked against the manifest before anything is used."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kubectl_dr.apps import OBJECTS_PART, RECORD_PART, TYPE
from kubectl_dr.errors import DrError
from kubectl_dr.repo import Backup, Repository
from kubectl_dr.repo.ids import id_problem

Json = dict[str, Any]


@dataclass
class AppBackup:
    backup: Backup
    objects: list[Json]
    record: Json

    @property
    def id(self) -> str:
        return self.backup.id

    def of_namespace(self, namespace: str) -> list[Json]:
        """The namespace's objects, the namespace itself, and the cluster-scoped objects recorded."""
        cluster_scoped = set(self.record.get("clusterScoped") or [])
        from kubectl_dr.apps.cleaning import ref

        return [o for o in self.objects
                if (o.get("metadata") or {}).get("namespace") == namespace
                or (o.get("kind") == "Namespace" and o["metadata"].get("name") == namespace)
                or ref(o) in cluster_scoped]

    def claims(self, namespace: str) -> list[Json]:
        return [c for c in self.record.get("claims") or [] if c.get("namespace") == namespace]


def find(repo: Repository, ref: str, namespace: str, cluster_uid: str | None) -> Backup:
    if ref != "latest":
        return repo.resolve(ref, TYPE)
    candidates = [b for b in repo.backups(TYPE) if namespace in (b.manifest.source.get("namespaces") or [])]
    mine = [b for b in candidates
            if cluster_uid is None or (b.manifest.cluster and b.manifest.cluster.uid == cluster_uid)]
    if mine:
        return mine[0]
    hint = "Back it up with `kubectl dr namespace backup NS`."
    if candidates:
        hint = (f"{len(candidates)} backup(s) of {namespace} from other clusters, newest "
                f"{candidates[0].id}: restore one with --from ID.")
    raise DrError(f"there is no application backup of namespace {namespace} of this cluster in {repo.location}",
                  hint=hint)


def read(repo: Repository, backup: Backup) -> AppBackup:
    if repo.deleting(backup):
        # Its claims' backups may be gone already: restoring it would bring the objects back without data.
        raise DrError(f"backup {backup.id} is being deleted (a delete of it and its claims' backups began and did "
                      "not finish): it is not restored",
                      hint=f"Finish the delete: kubectl dr backups delete {backup.id}; restore another backup "
                      "with --from ID.")
    def part(name: str) -> Any:
        with repo.open_part(backup, name) as stream:
            return json.loads(stream.read())  # read to the end: size and SHA-256 checked

    objects, record = part(OBJECTS_PART), part(RECORD_PART)
    if not isinstance(objects, list) or not isinstance(record, dict) or not all(
            isinstance(o, dict) and isinstance(o.get("metadata"), dict) and isinstance(o["metadata"].get("name"), str)
            for o in objects):
        raise DrError(f"backup {backup.id}: its objects are not a list of Kubernetes objects",
                      hint="The backup is damaged or not an application backup; choose another with --from.")
    for claim in record.get("claims") or []:
        # Each goes into an API path and a `pvc restore`: a name with "/" or ".." would reach another object.
        problem = _claim_problem(claim)
        if problem:
            raise DrError(f"backup {backup.id}: its record names a claim {problem}: refused",
                          hint="kubectl dr did not write it: the backup was changed in the repository. Restore another "
                               "backup (--from ID) and check who can write the repository.")
    return AppBackup(backup, objects, record)


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain, as an object's name


def _claim_problem(claim: Any) -> str | None:
    if not isinstance(claim, dict):
        return "that is not a record"
    for key in ("namespace", "name"):
        value = claim.get(key)
        if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
            return f"with the {key} {str(value)[:80]!r}, which is not one"
    if id_problem(str(claim.get("backup"))) is not None:
        return f"{claim['name']} whose backup ID {str(claim.get('backup'))[:80]!r} is not one"
    return None
