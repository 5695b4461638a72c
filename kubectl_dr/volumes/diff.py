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
from datetime import datetime, timedelta, timezone
from typing import Any

from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import Repository
from kubectl_dr.session import Session
from kubectl_dr.units import count
from kubectl_dr.volumes import rescue_pod, source, transfer, tree_check
from kubectl_dr.volumes.access import DIFF, plan_access
from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SYMLINK, Entries
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
class Field:
    """One property of an entry that differs: the volume's value (old) and the backup's (new)."""

    name: str
    old: Any
    new: Any

    def text(self) -> str:
        old = "?" if self.old is None else self.old
        return f"{self.name} {old} → {self.new}"


@dataclass
class Difference:
    path: str  # "" is the volume's root
    change: str  # ADDED (only in the backup), CHANGED, REMOVED (only in the volume: what --clean removes)
    kind: str  # the backup's kind of entry; the volume's for REMOVED
    fields: list[Field] = field(default_factory=list)

    @property
    def shown(self) -> str:
        path = self.path or "."
        return path + "/" if self.kind == DIR and self.path else path

    def line(self) -> str:
        mark = {ADDED: "+", CHANGED: "~", REMOVED: "-"}[self.change]
        details = ", ".join(f.text() for f in self.fields)
        return f"{mark} {self.shown}" + (f"  {details}" if details else "")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path or ".", "change": self.change, "kind": self.kind}
        if self.fields:
            data["fields"] = {f.name: {"old": f.old, "new": f.new} for f in self.fields}
        return data


ADDED, CHANGED, REMOVED = "added", "changed", "removed"


@dataclass
class DiffResult:
    namespace: str
    claim: str
    backup: str | None  # the backup's ID, or None for a tar file
    file: str | None = None  # the tar file, as given
    entries: int = 0  # what a restore writes: every entry of the backup, as the restore plan counts them
    differences: list[Difference] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # entries of another kind in the way: restore needs --clean
    origin: str | None = None  # the backup is of another cluster, or records none

    def _count(self, change: str) -> int:
        return sum(1 for d in self.differences if d.change == change)

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def volume_label(self) -> str:
        return f"volume {self.namespace}/{self.claim} (live)"

    @property
    def source_label(self) -> str:
        return f"backup {self.backup}" if self.backup is not None else f"tar file {self.file}"

    def to_dict(self) -> dict[str, Any]:
        added, changed = self._count(ADDED), self._count(CHANGED)
        return {"kind": "PvcDiff", "namespace": self.namespace, "pvc": self.claim, "backup": self.backup,
                "file": self.file, "old": self.volume_label, "new": self.source_label, "identical": self.identical,
                "origin": self.origin, "differences": [d.to_dict() for d in self.differences],
                "summary": {"entries": self.entries, "added": added, "changed": changed,
                            "unchanged": self.entries - added - changed, "removed": self._count(REMOVED),
                            "needsClean": len(self.blocking)}}

    def summary(self) -> str:
        """diff -u's shape: the sides labelled (old: the live volume, new: what a restore writes), one line an
        entry in path order, then what a restore would do."""
        lines = [f"--- {self.volume_label}", f"+++ {self.source_label} (what a restore writes)"]
        lines += [d.line() for d in self.differences]
        lines.append(self._verdict() + (f" ({self.origin})" if self.origin else ""))
        return "\n".join(lines) + "\n"

    def _verdict(self) -> str:
        of = f"{count(self.entries, 'entry', 'entries')} of the {self.source_label}"
        if self.identical:
            return f"identical: the volume holds the {of} as they are, and nothing else"
        added, changed, removed = self._count(ADDED), self._count(CHANGED), self._count(REMOVED)
        text = (f"a restore would write the {of}: {added} new, {changed} changed, "
                f"{self.entries - added - changed} as they are")
        if removed:
            text += f"; with --clean it would also remove {count(removed, 'entry', 'entries')} only the volume holds"
        if self.blocking:
            # Said here, not first at restore time: without --clean such a restore stops before its first byte.
            shown = ", ".join(repr(p or ".") for p in self.blocking[:3]) + (", …" if len(self.blocking) > 3 else "")
            verb = "needs" if len(self.blocking) == 1 else "need"
            text += (f"; {count(len(self.blocking), 'entry', 'entries')} of another kind in the way ({shown}) "
                     f"{verb} --clean")
        return text


def run(session: Session, repo: Repository, opts: DiffOptions) -> DiffResult:
    kube, console = session.kube, session.console
    access = plan_access(kube, opts.namespace, opts.claim, job=DIFF, read_only=True, quiesce=opts.quiesce)
    current, why = try_cluster_identity(kube)
    src = source.resolve(repo, opts.source, opts.namespace, opts.claim, console, from_claim=opts.from_claim,
                         allow_empty=True, purpose="compare", current=current, unknown_why=why,
                         server=kube.resolved.server, from_cluster=opts.from_cluster)
    say_plan(console, access)
    with Exposure(session, access, opts.image, "pvc-diff") as exposure:
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
    result = compare(opts.namespace, opts.claim, src.backup.id if src.backup else None, src.entries, found,
                     file=None if src.backup else opts.source)
    result.origin = src.origin
    return result


def compare(namespace: str, claim: str, backup: str | None, entries: Entries, found: dict[str, Found],
            file: str | None = None) -> DiffResult:
    result = DiffResult(namespace, claim, backup, file, len(entries))
    out: list[Difference] = []
    for entry in entries:
        have = found.get(entry.path)
        want = FILE if entry.kind == HARDLINK else entry.kind
        if have is None:
            # Every entry a restore would write is listed, as the restore plan counts them, also those inside
            # a directory the volume lacks.
            out.append(Difference(entry.path, ADDED, want))
            continue
        fields = differences(entry, have, found)
        if fields:
            out.append(Difference(entry.path, CHANGED, want, fields))
    # What lies inside a directory that the backup has as a file is part of that change, not listed apart.
    replaced = {d.path for d in out if d.change == CHANGED and d.fields[0].name == "kind" and d.fields[0].old == DIR}
    out += [Difference(p, REMOVED, found[p].kind) for p in tree_check.extras(entries, found)
            if not excluded(p) and not any(p.startswith(r + "/") for r in replaced)]
    result.differences = sorted(out, key=lambda d: d.path.split("/") if d.path else [])
    result.blocking = sorted(tree_check.conflicts(entries, found))
    return result


def differences(entry: Any, have: Found, found: dict[str, Found]) -> list[Field]:
    """What differs between the volume's entry (old) and the backup's (new)."""
    want = FILE if entry.kind == HARDLINK else entry.kind
    if have.kind != want:
        return [Field("kind", have.kind, want)]
    out = []
    if entry.kind == HARDLINK:
        target = found.get(entry.target)
        if target is None or target.inode != have.inode:
            out.append(Field("hardLinkTo", None, entry.target))
        return out
    if entry.kind == FILE and have.size != entry.size:
        out.append(Field("size", have.size, entry.size))
    if entry.kind == SYMLINK and have.size != len(entry.target.encode(ENCODING, ERRORS)):
        # The listing has the length of the volume's link text, not the text itself.
        out.append(Field("target", None, entry.target))
    if entry.kind != SYMLINK and have.mode != entry.mode:
        out.append(Field("mode", f"{have.mode:04o}", f"{entry.mode:04o}"))
    if have.uid != entry.uid:
        out.append(Field("uid", have.uid, entry.uid))
    if have.gid != entry.gid:
        out.append(Field("gid", have.gid, entry.gid))
    if have.mtime != entry.mtime and entry.kind in (FILE, SYMLINK):
        out.append(Field("mtime", rfc3339(have.mtime), rfc3339(entry.mtime)))
    return out


def rfc3339(seconds: int) -> str:
    """Seconds since the epoch as RFC 3339 in UTC, as kubectl prints times (before 1970 too)."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
