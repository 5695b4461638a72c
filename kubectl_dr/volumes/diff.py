"""`pvc diff`: the volume against a backup, from a read-only rescue pod — what a restore would change.

The pod lists the volume (`listing`), and the listing is compared with the backup's entry record:
entries the backup has and the volume lacks (a restore adds them), entries in both that differ (kind,
size, mode, owner, mtime, link target: contents are compared by size and mtime, as rsync's quick check
does), and entries the volume has and the backup does not (what `restore --clean` removes). Nothing in
the cluster changes but the pod, which is removed; a ReadWriteOncePod claim in use asks before its
consumers stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import Repository
from kubectl_dr.runs import Run
from kubectl_dr.units import count
from kubectl_dr.volumes import rescue_pod, source, transfer, tree_check
from kubectl_dr.volumes.access import DIFF, plan_access
from kubectl_dr.volumes.entries import FILE, HARDLINK, SYMLINK, Entries
from kubectl_dr.volumes.exposer import Exposure, say_plan
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.reconcile import excluded
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS


@dataclass
class DiffOptions:
    namespace: str
    claim: str
    source: str
    image: str = rescue_pod.DEFAULT_IMAGE
    quiesce: bool = False
    from_claim: str | None = None
    from_cluster: str | None = None  # --from latest of another cluster (NAME|UID)


@dataclass
class Change:
    path: str
    what: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "differences": self.what}


@dataclass
class DiffResult:
    namespace: str
    claim: str
    backup: str | None
    added: list[str] = field(default_factory=list)  # in the backup, not in the volume
    changed: list[Change] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # in the volume, not in the backup (top-most)
    origin: str | None = None  # the backup is of another cluster, or records none

    @property
    def identical(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "PvcDiff", "namespace": self.namespace, "pvc": self.claim, "backup": self.backup,
                "identical": self.identical, "added": self.added, "changed": [c.to_dict() for c in self.changed],
                "removed": self.removed, "origin": self.origin,
                "summary": {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed)}}

    def summary(self) -> str:
        lines = [f"+ {p or '.'}" for p in self.added]
        lines += [f"~ {c.path or '.'}  ({'; '.join(c.what)})" for c in self.changed]
        lines += [f"- {p}" for p in self.removed]
        lines.append(f"{self.namespace}/{self.claim} against backup {self.backup}: "
                     + ("identical" if self.identical else
                        f"{count(len(self.added), 'entry', 'entries')} a restore adds, {len(self.changed)} it "
                        f"changes, {len(self.removed)} only `restore --clean` removes")
                     + (f" ({self.origin})" if self.origin else ""))
        return "\n".join(lines) + "\n"


def run(kube: Kube, repo: Repository, opts: DiffOptions, console: Console, run: Run) -> DiffResult:
    access = plan_access(kube, opts.namespace, opts.claim, job=DIFF, read_only=True, quiesce=opts.quiesce)
    current, why = try_cluster_identity(kube)
    src = source.resolve(repo, opts.source, opts.namespace, opts.claim, console, from_claim=opts.from_claim,
                         allow_empty=True, current=current, unknown_why=why, server=kube.resolved.server,
                         from_cluster=opts.from_cluster)
    say_plan(console, access)
    with Exposure(kube, access, run, console, opts.image, "pvc-diff") as exposure:
        if access.stop:
            if access.claim.single_pod and not opts.quiesce:
                console.confirm(f"stop {', '.join(c.ref for c in access.consumers)} to compare "
                                f"{opts.namespace}/{opts.claim} (ReadWriteOncePod: one pod at a time) and start "
                                "them again after")
            exposure.stop_consumers()
        pod = exposure.start(read_only=True)
        assert pod is not None
        found = transfer.list_volume(kube, pod)
        exposure.finish()
    result = compare(opts.namespace, opts.claim, src.backup.id if src.backup else None, src.entries, found)
    result.origin = src.origin
    return result


def compare(namespace: str, claim: str, backup: str | None, entries: Entries, found: dict[str, Found]) -> DiffResult:
    result = DiffResult(namespace, claim, backup)
    missing_dirs: list[str] = []
    for entry in entries:
        have = found.get(entry.path)
        if have is None:
            if not any(entry.path.startswith(d + "/") for d in missing_dirs[-1:]):
                result.added.append(entry.path)
            missing_dirs.append(entry.path)
            continue
        what = differences(entry, have, found)
        if what:
            result.changed.append(Change(entry.path, what))
    # What lies inside a directory that the backup has as a file is part of that change, not listed apart.
    replaced = {c.path for c in result.changed if found[c.path].kind == "dir" and c.what[0].startswith("a dir ")}
    result.removed = [p for p in tree_check.extras(entries, found)
                      if not excluded(p) and not any(p.startswith(r + "/") for r in replaced)]
    return result


def differences(entry: Any, have: Found, found: dict[str, Found]) -> list[str]:
    want = FILE if entry.kind == HARDLINK else entry.kind
    if have.kind != want:
        return [f"a {have.kind} in the volume, a {want} in the backup"]
    out = []
    if entry.kind == HARDLINK:
        target = found.get(entry.target)
        if target is None or target.inode != have.inode:
            out.append(f"not a hard link to {entry.target!r}")
        return out
    if entry.kind == FILE and have.size != entry.size:
        out.append(f"size {have.size} → {entry.size}")
    if entry.kind == SYMLINK and have.size != len(entry.target.encode(ENCODING, ERRORS)):
        out.append(f"target → {entry.target!r}")
    if entry.kind != SYMLINK and have.mode != entry.mode:
        out.append(f"mode {have.mode:04o} → {entry.mode:04o}")
    if (have.uid, have.gid) != (entry.uid, entry.gid):
        out.append(f"owner {have.uid}:{have.gid} → {entry.uid}:{entry.gid}")
    if have.mtime != entry.mtime and entry.kind in (FILE, SYMLINK):
        out.append(f"mtime {have.mtime} → {entry.mtime}")
    return out
