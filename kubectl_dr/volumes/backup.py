"""`pvc backup`: the volume's contents and the truth about every entry, into the backup repository.

Order of events: the access plan (claim, consumers, node); the claim's lease; the consumers stopped
only for a ReadWriteOncePod claim (after asking) or --quiesce; a read-only rescue pod (on the
consumer's node for ReadWriteOnce, so the app keeps running), probed for its tar. Then:

1. the pod lists the volume (`listing`): what to expect, and what its user cannot read — without
   --skip-unreadable that ends the backup here, naming the paths and the ways to get them;
2. the pod streams `tar -c` of the volume's root entries (lost+found left out) into a repository
   part; the archive is checked as it arrives by the reader a restore uses (`tar_reader`);
3. the archive and the listing are reconciled into the entry record (`reconcile`), stored as a part
   of its own: owners, modes and times the headers cannot hold exactly;
4. commit only when the pod's size and SHA-256 equal ours, the exec succeeded, tar succeeded or
   failed only on what the listing accounts for, and nothing changed that nothing should have changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import __version__
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, Interrupted, VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.repo import BackupWriter, Manifest, Repository
from kubectl_dr.session import Session
from kubectl_dr.units import count, size
from kubectl_dr.volumes import compression, rescue_pod, scripts, transfer
from kubectl_dr.volumes import entries as entries_module
from kubectl_dr.volumes.access import BACKUP, AccessPlan, accepted, plan_access, refs, them
from kubectl_dr.volumes.entries import Entries
from kubectl_dr.volumes.exposer import Exposure, claim_lease, say_plan
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.reconcile import Identity, Reconciled, Skipped, reconcile, skipped_by_plan, unreadable_count
from kubectl_dr.volumes.security import SecurityPlan
from kubectl_dr.volumes.tar_reader import Archive, ArchiveError, TarReader

PART = "data.tar"
ENTRIES_PART = entries_module.PART
TYPE = "pvc"
SHOWN = 10


@dataclass
class BackupOptions:
    namespace: str
    claim: str
    image: str = rescue_pod.DEFAULT_IMAGE
    name: str | None = None
    quiesce: bool = False
    skip_unreadable: bool = False
    compress: str = compression.NONE  # auto|none|gzip: on the link only, the repository keeps the tar


@dataclass
class BackupPlan:
    """What a dry run found: what would be stopped, created and written."""

    access: AccessPlan
    repository: str
    dry_run: str
    pod_accepted: bool = False  # a server dry run: the pod passed admission

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "PvcBackupPlan", "dryRun": self.dry_run, "repository": self.repository,
                **self.access.to_dict(), "writesAtMost": self.access.claim.capacity,
                "podAcceptedByServer": self.pod_accepted or None}

    def summary(self) -> str:
        a = self.access
        lines = [f"(dry run) would back up {a.claim.namespace}/{a.claim.name} into {self.repository}"]
        if a.stop:
            lines.append(f"  stop {refs(a.consumers)} ({a.why_stop}), then start {them(a.consumers)} again")
        where = f"on node {a.node}" if a.node else "where the scheduler puts it"
        lines.append(f"  start a read-only rescue pod {where} {runs_as(a.security)}")
        if a.own:
            lines.append(f"  delete {count(len(a.own), 'pod')} of earlier runs that still mount the claim")
        # No pod has looked at the volume in a dry run, so how full it is is not known: the claim's capacity
        # is the bound.
        if a.claim.capacity:
            lines.append(f"  write at most {a.claim.capacity}, the claim's capacity (what the volume uses is known "
                         "once the pod lists it)")
        if self.pod_accepted:
            lines.append(f"  {accepted(a.stop and bool(a.consumers))} (nothing was persisted)")
        return "\n".join(lines) + "\n"


def runs_as(security: SecurityPlan) -> str:
    """Who the backup's rescue pod is, and why: root reads every file whatever its owner."""
    if security.root:
        return ("as root, to read every file whatever its owner (the volume mounted read-only, no "
                "service-account token)")
    whose = "the app's" if security.identity.get("runAsUser") else "nobody's"
    return (f"as uid {security.pod.get('runAsUser')}, gid {security.pod.get('runAsGroup')} ({whose}: Pod Security "
            f"\"{security.level}\" allows no root; the volume mounted read-only, no service-account token)")


@dataclass
class BackupResult:
    manifest: Manifest
    location: str
    skipped: list[Skipped] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    repository: str = ""

    @property
    def name(self) -> str:
        """What `backups list` calls it: the --name given, else NS/CLAIM."""
        return str(self.manifest.details.get("name") or
                   f"{self.manifest.source.get('namespace')}/{self.manifest.source.get('pvc')}")

    @property
    def unreadable(self) -> int:
        return unreadable_count(self.manifest.details) or 0

    def to_dict(self) -> dict[str, Any]:
        data = self.manifest.part(PART)
        return {**self.manifest.to_dict(), "name": self.name, "repository": self.repository,
                "location": self.location, "size": data.size, "sha256": data.sha256,
                "seconds": self.manifest.details.get("transfer", {}).get("seconds"),
                "skippedUnreadable": self.unreadable}

    def columns(self) -> list[str]:
        return ["ID", "NAME", "ENTRIES", "SKIPPED", "SIZE", "SHA256"]

    def rows(self) -> list[list[Any]]:
        data = self.manifest.part(PART)
        # Sizes as every table writes them (units.size); the digest's first 16 digits, as in every result table
        # (the whole one, and the size in bytes, are in -o json and `backups show`).
        return [[self.manifest.id, self.name, self.manifest.details["archive"]["entries"], self.unreadable,
                 size(data.size), data.sha256[:16]]]


def start_reader(session: Session, exposure: Exposure, access: AccessPlan, opts: BackupOptions, *,
                 beside_probe: Callable[[rescue_pod.RescuePod], None] | None = None) -> rescue_pod.RescuePod | None:
    """The pod that reads the volume for a backup (None when the dry run ends there), after the consumers
    the plan must stop are stopped: with consent when the claim admits one pod at a time and they are
    not merely quiesced."""
    if access.stop and access.claim.single_pod and not opts.quiesce and session.dry_run == "none":
        session.console.confirm(f"stop {', '.join(c.ref for c in access.consumers)} for the backup of "
                                f"{opts.namespace}/{opts.claim} (ReadWriteOncePod: one pod at a time) and "
                                "start them again after")
    if access.stop:
        exposure.stop_consumers()
    return exposure.start(read_only=True, beside_probe=beside_probe)


def run(session: Session, repo: Repository, opts: BackupOptions) -> BackupResult | BackupPlan:
    kube, console, dry_run = session.kube, session.console, session.dry_run
    access = plan_access(kube, opts.namespace, opts.claim, job=BACKUP, read_only=True, quiesce=opts.quiesce)
    say_plan(console, access)
    if dry_run == "client":
        claim_lease(kube, access, session.run, "client").acquire()  # says who holds it, writes nothing
        return BackupPlan(access, repo.location, "client")
    with Exposure(session, access, opts.image, "pvc-backup") as exposure:
        pod = start_reader(session, exposure, access, opts)
        if pod is None:
            return BackupPlan(access, repo.location, dry_run, pod_accepted=True)
        listed = time.monotonic()
        found = transfer.list_volume(kube, pod)
        listing = time.monotonic() - listed
        skipped = skipped_entries(found, pod, opts, console)
        manifest = _stream(kube, repo, pod, opts, access, found, skipped, console, listing)
        exposure.finish()
    details = manifest.details
    return BackupResult(manifest, repo.backup_location(manifest.id),
                        [Skipped(**s) for s in details.get("skipped") or []], details.get("changedDuringBackup") or [],
                        repo.location)


def skipped_entries(found: dict[str, Found], pod: rescue_pod.RescuePod, opts: BackupOptions,
                    console: Console) -> list[Skipped]:
    """What the pod's listing says the backup cannot or will not read (said on the console); an error when
    it cannot read something and --skip-unreadable was not given. Every backup kind asks this."""
    assert pod.tools is not None
    identity = Identity(pod.tools.uid, frozenset(pod.tools.gids))
    skipped = skipped_by_plan(found, identity)
    unreadable = [s for s in skipped if s.why.startswith("unreadable")]
    for item in skipped:
        if item not in unreadable or opts.skip_unreadable:
            console.say(f"skipping {item.path!r}: {item.why}")
    if unreadable and not opts.skip_unreadable:
        shown = "\n".join(f"  {s.path!r}: {s.why}" for s in unreadable[:SHOWN])
        more = f"\n  … and {len(unreadable) - SHOWN} more" if len(unreadable) > SHOWN else ""
        raise DrError(
            f"cannot back up {opts.namespace}/{opts.claim}: the rescue pod (uid {identity.uid}) cannot read "
            f"{count(len(unreadable), 'entry', 'entries')}:\n{shown}{more}\nNothing was kept.",
            hint=("To back them up, run the backup as root where the namespace allows it (for its duration: "
                  f"kubectl label namespace {opts.namespace} pod-security.kubernetes.io/enforce=baseline "
                  "--overwrite), or give an --image whose user can read them. Or pass --skip-unreadable to back "
                  "up the rest: the skipped paths are recorded in the backup (kubectl dr backups show)."))
    return skipped


def _stream(kube: Kube, repo: Repository, pod: rescue_pod.RescuePod, opts: BackupOptions, access: AccessPlan,
            found: dict[str, Found], skipped: list[Skipped], console: Console, listing: float) -> Manifest:
    assert pod.tools is not None
    tools = pod.tools
    expected = archive_size_estimate(found)
    claim = access.claim
    source: dict[str, Any] = {
        **claim.describe(),
        "server": kube.resolved.server,
        "context": kube.resolved.context_name,
        "node": access.node,
        "consumers": [c.ref for c in access.consumers],
    }
    # The listing says how much is coming: a repository without room for it fails now, not at 90 %.
    repo.preflight(expected)
    cluster = identity_for_backup(kube, console.warn)
    writer: BackupWriter | None = None
    reader = TarReader(gnu_sparse=tools.tar == scripts.GNU)
    what = f"backup of the volume through pod {pod.namespace}/{pod.name}"
    choice = choose_compression(kube, pod, opts.compress, console, found)
    try:
        with repo.create(TYPE, source, opts.name or f"{opts.namespace}-{opts.claim}", cluster=cluster) as writer:
            with writer.open_part(PART) as part, console.progress(f"backup {opts.namespace}/{opts.claim}",
                                                                  expected) as bar:
                def sink(data: bytes) -> None:
                    part.write(data)
                    reader.feed(data)
                    bar.advance(len(data))

                checked = transfer.receive(kube, pod, scripts.backup_script(tools.tar, choice.method), sink,
                                           lambda: (part.size, part.sha256), what,
                                           gzipped=choice.method == compression.GZIP)
                pod.release()  # nothing more runs in it: it terminates while we finish
                seconds = bar.elapsed
            archive, record = judged_archive(reader, found, skipped, checked, access, console, what)
            details = _details(opts, access, pod, record, checked, seconds, listing,
                               gnu_sparse=any(m.sparse for m in archive.members.values()))
            details["transfer"]["compression"] = {**choice.to_dict(), "wireBytes": checked.wire}
            with writer.open_part(ENTRIES_PART) as listing_part:
                for line in record.entries.lines({"tar": f"{tools.tar} {tools.tar_version}".strip()}):
                    listing_part.write(line)
            return writer.commit(details)
    except (Interrupted, VerificationError):
        # Said here because the next lines are about the pod and the consumers: the user should not
        # have to wonder whether a cut-short archive now sits in the repository.
        if writer is not None and writer.state == "aborted":
            console.say("the incomplete backup was removed: nothing was kept in the repository")
        raise


def judged_archive(reader: TarReader, found: dict[str, Found], skipped: list[Skipped], checked: transfer.Checked,
                   access: AccessPlan, console: Console, what: str) -> tuple[Archive, Reconciled]:
    """The archive tar wrote, read to its end, reconciled with the listing, and the transfer judged."""
    try:
        archive = reader.finish()
    except ArchiveError as exc:
        raise VerificationError(f"{what}: the archive tar wrote is not one kubectl dr can restore: "
                                f"{exc.message}", hint=exc.hint) from None
    record = reconcile(archive, found, skipped)
    judge_transfer(record, checked, access, console, what)
    return archive, record


def judge_transfer(record: Reconciled, checked: transfer.Checked, access: AccessPlan, console: Console,
                   what: str) -> None:
    """tar's exit and the reconciliation together: every missing or changed entry must be explained. Every
    backup kind that reads the volume as tar judges its stream this way."""
    if checked.tar_exit != 0 and not scripts.harmless_tar_messages(checked.warnings):
        raise VerificationError(f"{what}: tar exited with code {checked.tar_exit}:\n{checked.warnings}",
                                hint="Nothing was kept. Fix the cause (a failing disk, a file system error) "
                                     "and run the backup again.")
    if checked.tar_exit != 0 and not record.changed and not record.skipped:
        raise VerificationError(f"{what}: tar exited with code {checked.tar_exit} but every entry is in the "
                                f"archive:\n{checked.warnings}", hint="Nothing was kept.")
    if record.changed:
        shown = ", ".join(repr(p) for p in record.changed[:SHOWN])
        more = f" and {len(record.changed) - SHOWN} more" if len(record.changed) > SHOWN else ""
        if access.quiet:
            raise VerificationError(
                f"{what}: {count(len(record.changed), 'entry', 'entries')} changed while the backup read them, "
                f"although nothing should write the volume: {shown}{more}",
                hint="Something else writes to it (a pod outside kubectl dr's view?). Nothing was kept.")
        console.warn(f"{count(len(record.changed), 'entry', 'entries')} changed while the backup read them (the "
                     f"app kept writing): {shown}{more}. They are kept as tar read them; for a consistent copy, "
                     "back up with --quiesce")
    if checked.warnings and checked.tar_exit == 0:
        console.say(f"tar reported:\n{checked.warnings}")


def _details(opts: BackupOptions, access: AccessPlan, pod: rescue_pod.RescuePod, record: Reconciled,
             checked: transfer.Checked, seconds: float, listing: float, *, gnu_sparse: bool) -> dict[str, Any]:
    assert pod.tools is not None
    entries: Entries = record.entries
    return {
        "name": opts.name,
        "archive": {"format": "tar", "part": PART, "tar": pod.tools.tar, "tarVersion": pod.tools.tar_version,
                    # Sparse files stored as GNU sparse members: only GNU tar can extract this archive.
                    "gnuSparse": gnu_sparse,
                    **entries.summary()},
        "entries": {"part": ENTRIES_PART, "format": entries_module.FORMAT, "version": entries_module.VERSION},
        "skipped": [s.to_dict() for s in record.skipped],
        "changedDuringBackup": record.changed[:1000],
        "changedDuringBackupCount": len(record.changed),
        "transfer": {
            "size": checked.size, "sha256Pod": checked.sha256, "sha256Local": checked.sha256,
            "execProtocol": checked.protocol, "seconds": round(seconds, 3),
            # The pod's stat listing before the stream (what the exact round trip costs on top of tar).
            "listingSeconds": round(listing, 3),
        },
        "rescuePod": {"image": opts.image, "node": access.node, "securityContext": pod.security.describe(),
                      "tools": pod.tools.to_dict()},
        "quiesced": [c.ref for c in access.consumers] if access.stop else [],
        "toolVersion": __version__,
    }


def choose_compression(kube: Kube, pod: rescue_pod.RescuePod, requested: str, console: Console,
                       found: dict[str, Found]) -> compression.Choice:
    """`auto` times the link out of the pod, and on a slow one samples the largest files with the pod's
    gzip (data that does not shrink is sent as it is). gzip is said, since it costs the pod's CPU."""
    rate = ratio = None
    if requested == compression.AUTO:
        rate = transfer.link_rate(kube, pod, into_pod=False)
        if rate is not None and rate < compression.AUTO_BELOW:
            largest = sorted((f for f in found.values() if f.kind == "file" and f.size and _plain(f.path)),
                             key=lambda f: -f.size)
            if largest:
                ratio = transfer.sample_ratio(kube, pod, [f.path for f in largest[:compression.SAMPLES]])
    choice = compression.choose(requested, rate, ratio)
    if choice.method != compression.NONE:
        console.say(f"compressing the stream with {choice.method} in the pod ({choice.why}); "
                    "size and SHA-256 are checked on the tar stream")
    return choice


def _plain(path: str) -> bool:
    """A name that goes into a command line as it is (sampling needs no odd names)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path.isprintable()


def archive_size_estimate(found: dict[str, Found]) -> int:
    """About what tar will write for this listing: a header per entry (two more for a long name), data
    rounded up to whole blocks, the end marker and the last record's padding. It errs on the large side
    (a hard link's data counts each time): it sizes the repository check and the progress bar."""
    total = 2 * 512 + 10240
    for path, entry in found.items():
        total += 512 + (1024 + len(path) if len(path) >= 100 else 0)
        if entry.kind == "file":
            total += (entry.size + 511) // 512 * 512
    return total


def check_name(name: str | None) -> None:
    if name is not None and not name.strip():
        raise DrError("--name must not be empty")
