"""`pvc restore`: a verified backup into the volume, with its consumers stopped and started again.

Nothing is touched until the archive is proven safe (read by the reader both tars agree with, and
matching its entry record) and the backup intact (sizes and SHA-256 of every part). Order: the source
read and checked; confirmation; the claim's lease; the checksum pass (a claim nobody uses gets its
rescue pod meanwhile, one that does nothing until the transfer); the consumers scaled to 0 (records on
the objects); the read-write rescue pod with the consumers' identity; then, still before the first
byte, the volume listed and planned: entries of another kind in the way (a directory where the backup
has a file) are refused without --clean, and the volume must have room. A restic snapshot is read in a
thread beside the lease, the consumers' stop and the pod's start instead (`_run_prepared`), and still
before the first byte.

From the first byte on (`Exposure.mark_torn`) a failure keeps the consumers stopped: --clean's
removals, the archive streamed in and checked on both sides, then the owners, modes, times and holes
tar could not give back set from the record, and the volume checked entry by entry against it. Only
then are the pod deleted and the consumers started. A failed or interrupted restore is finished by
running it again: tar overwrites what it left half-written.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.repo import Backup, Repository
from kubectl_dr.session import Session
from kubectl_dr.units import count, size
from kubectl_dr.volumes import (
    compression,
    incremental_restore,
    rescue_pod,
    restic_in_place,
    scripts,
    source,
    transfer,
    tree_check,
)
from kubectl_dr.volumes.access import RESTORE, AccessPlan, accepted, plan_access, refs, them
from kubectl_dr.volumes.entries import BLOCKDEV, CHAR, DIR, FILE
from kubectl_dr.volumes.exposer import Exposure, claim_lease, say_plan
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.rescue_pod import RescuePod
from kubectl_dr.volumes.source import Source

# Space a restore keeps in hand beyond its estimate: file-system metadata, directories, rounding.
SPACE_MARGIN = 1.02
BLOCK = 4096


@dataclass
class RestoreOptions:
    namespace: str
    claim: str
    source: str  # backup ID, prefix, "latest", a backup directory, or a tar file
    image: str = rescue_pod.DEFAULT_IMAGE
    clean: bool = False
    allow_empty: bool = False
    from_claim: str | None = None
    from_cluster: str | None = None  # --from latest of another cluster (NAME|UID)
    include: list[str] | None = None  # only these paths (and the directories leading to them)
    compress: str = compression.NONE  # auto|none|gzip|xz: on the link only
    full: bool = False  # send every entry, even what the volume already holds (no incremental restore)
    allow_devices: bool = False  # device nodes of the backup are made in the volume (else refused)


@dataclass
class RestorePlan:
    access: AccessPlan
    source: Source
    clean: bool
    dry_run: str
    pod_accepted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "PvcRestorePlan", "dryRun": self.dry_run, "backup": _backup_id(self.source),
                "archive": str(self.source.path), "size": self.source.size, "clean": self.clean,
                "entries": self.source.entries.summary(), "emptyVolume": self.source.empty_volume,
                **self.access.to_dict(),
                "podAcceptedByServer": self.pod_accepted or None, "origin": self.source.origin}

    def summary(self) -> str:
        a, s = self.access, self.source
        lines = [f"(dry run) would restore {count(len(s.entries), 'entry', 'entries')} ({size(s.size)}) from "
                 f"{s.label} into {a.claim.namespace}/{a.claim.name}"]
        if s.origin:
            lines.append(f"  {s.origin}")
        if (other := s.other_claim(a.claim.namespace, a.claim.name)) is not None:
            lines.append(f"  the backup is of another claim, {other}")
        if s.empty_volume:
            lines.append("  the backup holds an empty volume: no entry would be written"
                         + (", and --clean would remove everything the volume holds" if self.clean else ""))
        if a.consumers:
            lines.append(f"  stop {refs(a.consumers)}, and start {them(a.consumers)} again once the volume "
                         "checks out")
        lines.append(f"  start a read-write rescue pod ({'root' if a.security.root else 'non-root'})"
                     + (": the claim's first consumer" if a.claim.pending else ""))
        if self.clean:
            lines.append("  remove what the volume holds and the backup does not (see `kubectl dr pvc diff`)")
        if self.pod_accepted:
            lines.append(f"  {accepted(bool(a.consumers))} (nothing was persisted)")
        return "\n".join(lines) + "\n"


@dataclass
class RestoreResult:
    namespace: str
    claim: str
    source: Source
    checked: transfer.Checked
    seconds: float
    removed: list[str] = field(default_factory=list)
    replaced_kinds: list[str] = field(default_factory=list)
    fixed: int = 0
    consumers: list[str] = field(default_factory=list)
    security: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    listing_seconds: float = 0.0  # the pod's stat listings (the plan, the check): the exact round trip's cost
    compression: dict[str, Any] = field(default_factory=dict)
    incremental: dict[str, Any] | None = None  # files and bytes sent and skipped (incremental restores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "PvcRestore", "namespace": self.namespace, "pvc": self.claim,
            "listingSeconds": round(self.listing_seconds, 3),
            "backup": _backup_id(self.source), "archive": str(self.source.path), "size": self.checked.size,
            "sha256": self.checked.sha256, "execProtocol": self.checked.protocol, "seconds": round(self.seconds, 3),
            "entries": self.source.entries.summary(), "entryRecord": self.source.recorded,
            "removed": self.removed, "replacedKinds": self.replaced_kinds, "fixedAfterExtraction": self.fixed,
            "consumers": self.consumers, "securityContext": self.security, "tools": self.tools,
            "origin": self.source.origin, "compression": self.compression or None,
            "incremental": self.incremental,
        }

    def columns(self) -> list[str]:
        return ["PVC", "FROM", "ENTRIES", "REMOVED", "SIZE", "SHA256", "ORIGIN"] + (
            ["SENT"] if self.incremental is not None else [])

    def rows(self) -> list[list[Any]]:
        # FROM: the backup's ID, or the tar file given; ORIGIN, where a cell may be words: another cluster's
        # backup restored here is said in the result, not only in the plan. SIZE is always what the volume now
        # holds from the backup; an incremental restore says in SENT how little of it crossed (and SHA256 is then
        # the digest of that stream).
        row = [f"{self.namespace}/{self.claim}", _backup_id(self.source) or str(self.source.path),
               len(self.source.entries), len(self.removed), size(self.checked.size),
               self.checked.sha256[:16], self.source.origin or "-"]
        if self.incremental is not None:
            delta = self.incremental
            row[4] = size(int(delta["bytesSent"]) + int(delta["bytesSkipped"]))
            reused = int(delta.get("bytesReusedInPlace", 0))
            in_place = f", {size(reused)} of {count(int(delta['filesInPlace']), 'large file')} reused in place" \
                if delta.get("filesInPlace") else ""
            row.append(f"{size(self.checked.size + int(delta.get('inPlaceStreamBytes', 0)))}: "
                       f"{count(int(delta['filesSent']), 'file', 'files')} sent, "
                       f"{int(delta['filesSkipped'])} already there{in_place}")
        return [row]


def _backup_id(src: Source) -> str | None:
    return src.backup.id if src.backup is not None else src.snapshot


class _Cancelled(Exception):
    pass


class Verification:
    """The checksum pass over a backup, in a thread, so that a rescue pod can start meanwhile.

    `with Verification(repo, backup, console) as v: …; v.wait()`: `wait` raises if the backup is damaged.
    Leaving the block early (an error or Ctrl-C in the main thread) stops the pass at its next chunk.
    """

    def __init__(self, repo: Repository | None, backup: Backup | None, console: Console) -> None:
        self.repo, self.backup, self.console = repo, backup, console
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1, "verify-backup")
        self._future: Future[None] | None = None

    def __enter__(self) -> Verification:
        if self.backup is not None:
            self.console.say(f"verifying backup {self.backup.id} (sizes and SHA-256 of every part)")
            self._future = self._pool.submit(self._run, self.backup)
        return self

    def _run(self, backup: Backup) -> None:
        with self.console.progress(f"verify {backup.id}", sum(p.size for p in backup.manifest.parts)) as bar:
            def advance(n: int) -> None:
                if self._cancel.is_set():
                    raise _Cancelled
                bar.advance(n)

            assert self.repo is not None
            self.repo.verify(backup, progress=advance)

    def wait(self) -> None:
        if self._future is not None:
            self._future.result()

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=True)


def _subset(src: Source, include: list[str], console: Console) -> Source:
    """--include: the checked archive cut down to those paths in a private directory removed at the end."""
    from kubectl_dr import cleanup
    from kubectl_dr.volumes import browse
    from kubectl_dr.volumes.restic_source import normalise_includes

    work = Path(tempfile.mkdtemp(prefix="kubectl-dr-include-"))
    cleanup.current().push(f"remove the included paths' archive in {work}", lambda: shutil.rmtree(work, True))
    cut = browse.subset(browse.Browsed.of(src), normalise_includes(include), work)
    console.say(f"{src.label}: {count(len(cut.entries), 'entry', 'entries')} of {len(src.entries)} included")
    return cut


class SourceReading:
    """What a Source made in a thread (`run`'s `prepared`) is told and tells: `cancelled()` once the restore
    has stopped (it stops reading at its next entry), and it calls `located()` once it knows the backup
    exists and opens (the repository's key, the snapshot found), before the long part (the trees)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._located = threading.Event()

    def cancelled(self) -> bool:
        return self._stop.is_set()

    def located(self) -> None:
        self._located.set()

    def cancel(self) -> None:
        self._stop.set()

    def wait_located(self, making: Future[Source]) -> None:
        """Until `located()` was called, or the making ended (its error raised here)."""
        while not self._located.wait(0.05):
            if making.done():
                making.result()
                return


def run(session: Session, repo: Repository | None, opts: RestoreOptions, *,
        prepared: Callable[[SourceReading], Source] | None = None) -> RestoreResult | RestorePlan:
    """`prepared` makes the Source another way (a restic snapshot, read and checked here), in a thread,
    told through a `SourceReading`; `repo` is then not used."""
    kube, console, dry_run = session.kube, session.console, session.dry_run
    if prepared is not None:
        return _run_prepared(session, opts, prepared)
    access = plan_access(kube, opts.namespace, opts.claim, job=RESTORE, read_only=False)
    assert repo is not None
    current, why = try_cluster_identity(kube)
    src = source.resolve(repo, opts.source, opts.namespace, opts.claim, console, from_claim=opts.from_claim,
                         allow_empty=opts.allow_empty, dry_run=dry_run != "none", current=current,
                         unknown_why=why, server=kube.resolved.server, from_cluster=opts.from_cluster)
    if opts.include:
        src = _subset(src, opts.include, console)
    refuse_devices(src, opts)
    return _proceed(session, repo, access, src, opts)


def refuse_devices(src: Source, opts: RestoreOptions) -> None:
    """A device node is made in the volume only when asked: a repository writer could plant one of the node's
    disk (mode 0666) for any privileged consumer of the volume to open. Apps' volumes hold none (a chroot's or
    an image's /dev may: --allow-devices)."""
    devices = [e for e in src.entries if e.kind in (CHAR, BLOCKDEV)]
    if devices and not opts.allow_devices:
        shown = ", ".join(f"{e.path} ({'block' if e.kind == BLOCKDEV else 'character'} device)" for e in devices[:5])
        raise DrError(f"{src.label} holds {count(len(devices), 'device node')}: {shown}"
                      + (", …" if len(devices) > 5 else "") + "; nothing was changed",
                      hint="An app's volume holds none: if this backup should (a chroot, an image's /dev), restore "
                           "it with --allow-devices; otherwise the backup may have been changed in the repository.")


def _run_prepared(session: Session, opts: RestoreOptions,
                  prepared: Callable[[SourceReading], Source]) -> RestoreResult | RestorePlan:
    """A restore from a Source that takes a while to make (a restic snapshot: the repository's key, its
    snapshot list, the snapshot's trees) made in a thread beside the cluster's side: the claim and its
    consumers looked up and, for a real run, once the user has agreed, the lease taken, the rescue pod
    started and the volume listed. Consumers are stopped only once the snapshot is found (a wrong ID or
    password does not stop an app), and before the pod starts: nothing reads or writes the volume before
    they are stopped, and nothing is written before the Source is read and checked (`_restore`).
    A failure on either side stops the other: the reading at its next entry; the pod and the consumers
    undone by the command's cleanup, as after any failure before the first byte."""
    kube, console, dry_run = session.kube, session.console, session.dry_run
    reading = SourceReading()
    with ThreadPoolExecutor(1, "restore-source") as pool:
        making = pool.submit(prepared, reading)
        try:
            access = plan_access(kube, opts.namespace, opts.claim, job=RESTORE, read_only=False)
            if dry_run != "none":
                src = _trusted(kube, making.result())
                refuse_devices(src, opts)
                return _proceed(session, None, access, src, opts)
            say_plan(console, access)
            # Asked before the snapshot is read to the end, so without its counts (said once it is read):
            # the reading goes on while a person answers.
            console.confirm(f"restore snapshot {opts.source} into {opts.namespace}/{opts.claim}, "
                            f"{_how(opts)} what the snapshot contains{_stops(access)}")
            with Exposure(session, access, opts.image, "pvc-restore") as exposure:
                if access.consumers:
                    reading.wait_located(making)
                    exposure.stop_consumers()
                listings = _Stopwatch()
                listed: list[dict[str, Found]] = []
                # Listed while the pod's tools are probed, with change times: the snapshot, read meanwhile, may
                # have files an incremental restore can trust by them; `stat`'s one field more costs nothing
                # worth asking first.
                pod = exposure.start(read_only=False, meanwhile=" (while the snapshot is read)",
                                     beside_probe=lambda started: listed.append(
                                         listings.run(lambda: transfer.list_volume(kube, started, ctime=True))))
                assert pod is not None
                found = listed[0]
                # The free space too, while the snapshot may still be read (it does not depend on it).
                free, _ = transfer.capture(kube, pod, scripts.FREE_SPACE, what="df")
                src = _trusted(kube, making.result())
                refuse_devices(src, opts)
                return _restore(kube, exposure, pod, src, opts, console, found=found, listings=listings,
                                free=free)
        except BaseException:
            reading.cancel()
            raise


def _trusted(kube: Kube, src: Source) -> Source:
    """Files trusted by their metadata only in the cluster the snapshot's backup ran in (the same claim)."""
    if src.unchanged_since:
        current, _ = try_cluster_identity(kube)
        if current is None or current.uid != src.unchanged_cluster:
            src.unchanged_since = None
    return src


def _stops(access: AccessPlan) -> str:
    return f", stopping {', '.join(c.ref for c in access.consumers)}" if access.consumers else ""


def _how(opts: RestoreOptions) -> str:
    return "replacing" if not opts.clean else "replacing it and removing everything else in"


def _proceed(session: Session, repo: Repository | None, access: AccessPlan, src: Source,
             opts: RestoreOptions) -> RestoreResult | RestorePlan:
    kube, console, dry_run = session.kube, session.console, session.dry_run
    say_plan(console, access)
    if dry_run == "client":
        claim_lease(kube, access, session.run, "client").acquire()
        return RestorePlan(access, src, opts.clean, "client")
    if dry_run == "none":
        other = src.other_claim(opts.namespace, opts.claim)
        console.confirm(f"restore {count(len(src.entries), 'entry', 'entries')} ({size(src.size)}) into "
                        f"{opts.namespace}/{opts.claim}"
                        + (f" from a backup of ANOTHER claim, {other}" if other else "")
                        + f", {_how(opts)} what the backup contains{_stops(access)}")
    with Exposure(session, access, opts.image, "pvc-restore") as exposure:
        pod = None
        with Verification(repo, src.backup if dry_run == "none" and not src.verified else None,
                          console) as verification:
            # Nothing to stop: the pod (scheduling, image pull, volume attach) starts while the backup is
            # verified; it does not touch the volume before the transfer. Consumers are stopped only for a
            # backup known to be intact.
            if not access.consumers and src.backup is not None and dry_run == "none":
                pod = exposure.start(read_only=False, meanwhile=" (while the backup is verified)")
            verification.wait()
        exposure.stop_consumers()
        if pod is None:
            pod = exposure.start(read_only=False)
        if pod is None:
            return RestorePlan(access, src, opts.clean, dry_run, pod_accepted=True)
        return _restore(kube, exposure, pod, src, opts, console)


def _rerun(session: Session, src: Source, opts: RestoreOptions) -> str:
    """The command that finishes this restore: the user's own, with the namespace spelled out and the backup
    pinned by its ID (a `latest` could name a newer backup by then, and --from-claim/--from-cluster only
    choose one for `latest`). A restic snapshot is pinned by its ID the same way."""
    pinned = src.backup.id if src.backup is not None else src.snapshot
    drop = ["-n", "--namespace", "--dry-run", *(["--from", "--from-claim", "--from-cluster"] if pinned else [])]
    add = ["-n", opts.namespace, *(["--from", pinned] if pinned else [])]
    return session.command_line(drop=drop, add=add,
                                default=["pvc", "restore", opts.claim, "--from", opts.source])


def _restore(kube: Kube, exposure: Exposure, pod: RescuePod, src: Source, opts: RestoreOptions,
             console: Console, *, found: dict[str, Found] | None = None,
             listings: _Stopwatch | None = None, free: bytes | None = None) -> RestoreResult:
    """`found`: the volume already listed (with change times), its time on `listings`; `free`: `df`'s
    answer already read."""
    assert pod.tools is not None
    listings = listings or _Stopwatch()
    sec = pod.security  # the plan the pod runs with (Pod Security admission may have asked for another)
    if src.gnu_only and pod.tools.tar != scripts.GNU:
        raise DrError(f"{src.label} stores sparse files as GNU tar sparse members, which busybox tar cannot "
                      "extract; nothing was changed",
                      hint="Restore with an image that has GNU tar, e.g. --image debian (or the --image the "
                           "backup was made with).")
    # With change times when the snapshot has files whose metadata an incremental restore can trust.
    trust = bool(src.unchanged_since) and src.chunks is not None and not opts.full
    if found is None:
        found = listings.run(lambda: transfer.list_volume(kube, pod, ctime=trust))
    blocking = tree_check.conflicts(src.entries, found)
    extras = tree_check.extras(src.entries, found) if opts.clean else []
    if blocking and not opts.clean:
        shown = "\n".join(f"  {p!r}: a {found[p].kind} in the volume, {_kind_in(src, p)} in the backup"
                          for p in blocking[:tree_check.SHOWN])
        raise DrError(f"cannot restore into {opts.namespace}/{opts.claim}: "
                      f"{count(len(blocking), 'entry', 'entries')} of the volume stand where the backup has "
                      f"another kind of entry, and tar cannot replace them:\n{shown}\nNothing was written.",
                      hint="Pass --clean to remove them (and everything else the backup does not hold), or move "
                           "them aside with `kubectl dr pvc rescue`.")
    _check_room(kube, pod, src, found, set(blocking) | set(extras), sparse_kept=src.gnu_only,
                label=f"{opts.namespace}/{opts.claim}", free=free)
    doomed = sorted(set(blocking) | set(extras))
    wire, delta = src, None
    if src.chunks is not None and not opts.full:  # still before the volume is touched
        delta = incremental_restore.decide(kube, pod, src, found, set(doomed), console,
                                           threshold=restic_in_place.THRESHOLD if src.load_blob else None)
        if not opts.clean:
            delta.kept_extras = tree_check.extras(src.entries, found)
            if delta.kept_extras:
                shown = ", ".join(repr(p) for p in delta.kept_extras[:tree_check.SHOWN])
                more = f" and {len(delta.kept_extras) - tree_check.SHOWN} more" \
                    if len(delta.kept_extras) > tree_check.SHOWN else ""
                console.say(f"keeping {count(len(delta.kept_extras), 'entry', 'entries')} that are not in what is "
                            f"restored (a whole restore with --clean removes them): {shown}{more}")
    if src.materialize is not None:  # the archive, of what is sent only, its blobs read and checked now
        wire = src.materialize(delta.send if delta is not None else None)
    choice = _choose_compression(kube, pod, wire, opts.compress, console)  # before the volume is touched
    exposure.mark_torn(_rerun(exposure.session, src, opts))
    if doomed:
        console.say(f"--clean: removing {count(len(doomed), 'entry', 'entries')} the backup does not hold"
                    + (f" ({len(blocking)} of another kind than the backup's)" if blocking else ""))
        transfer.run_script(kube, pod, scripts.remove_script(doomed), "removal")
    with console.progress(f"restore {opts.namespace}/{opts.claim}", wire.size) as bar:
        checked = transfer.send(kube, pod, wire.path, wire.size, keep_owners=sec.root, progress=bar,
                                verified_sha256=wire.sha256, compress=choice.method)
        seconds = bar.elapsed
    if delta is not None and delta.in_place:  # after the tar stream, still torn until the check below
        assert src.load_blob is not None
        delta.in_place_stream = restic_in_place.write(kube, pod, delta.in_place, src.load_blob, console,
                                                      f"{opts.namespace}/{opts.claim}")
    if checked.warnings:
        console.say(f"tar reported:\n{checked.warnings}")
    rules = tree_check.Rules(owners=sec.root, modes=sec.root,
                             times_of_uid=None if sec.root else pod.tools.uid, sparse=pod.tools.dig_holes)
    fixed = 0
    if delta is not None:
        # An incremental restore knows what it wrote: the owners, modes and times of those entries (and of
        # the directories above them) are set in the exec that lists the volume again, one round trip and one
        # listing instead of a listing, the fixes, and another listing. Anything still differing is fixed below.
        predicted = tree_check.predicted_fixes(
            src.entries, found, delta.send | {b.path for b in delta.in_place} | set(doomed), rules)
        fixed = len(predicted)
        console.say(f"setting owners, modes and times of {count(len(predicted.paths()), 'entry', 'entries')} the "
                    "restore wrote or found differing, and listing the volume again")
        found = listings.run(transfer.list_volume_after, kube, pod, scripts.fix_script(predicted, strict=False))
    else:
        found = listings.run(transfer.list_volume, kube, pod)
    comparison = tree_check.compare(src.entries, found, rules)
    what = f"the restored volume {opts.namespace}/{opts.claim} does not match"
    tree_check.require_match(comparison.problems, what)
    fixed += len(comparison.fixes)
    if comparison.fixes:
        console.say(f"setting owners, modes and times tar could not restore on "
                    f"{count(len(comparison.fixes), 'entry', 'entries')}")
        transfer.run_script(kube, pod, scripts.fix_script(comparison.fixes, strict=sec.root), "setting metadata")
        found = listings.run(transfer.list_volume, kube, pod)
    problems = tree_check.differences(src.entries, found, rules)
    if opts.clean:
        problems += [f"{p!r} is not in the backup and was not removed" for p in tree_check.extras(src.entries, found)]
    tree_check.require_match(problems, what)
    console.say(f"checked {count(len(src.entries), 'entry', 'entries')} in the volume against the backup: all match")
    consumers = [c.ref for c in exposure.access.consumers]
    exposure.finish()
    return RestoreResult(opts.namespace, opts.claim, wire, checked, seconds, removed=doomed,
                         replaced_kinds=blocking, fixed=fixed, consumers=consumers, security=sec.describe(),
                         tools=pod.tools.to_dict(), listing_seconds=listings.total,
                         compression={**choice.to_dict(), "wireBytes": checked.wire},
                         incremental=delta.to_dict(checked.size) if delta is not None else None)


def _choose_compression(kube: Kube, pod: RescuePod, src: Source, requested: str,
                        console: Console) -> compression.Choice:
    """`auto`: samples of the archive first (free), then, if they shrink, the link into the pod timed."""
    if requested != compression.AUTO:
        choice = compression.choose(requested, None)
    else:
        ratio = compression.sample_ratio(src.path, src.size)
        rate = transfer.link_rate(kube, pod, into_pod=True) if ratio <= compression.WORTH else None
        choice = compression.choose(requested, rate, ratio) if rate is not None else compression.Choice(
            compression.NONE, requested, f"samples of the archive shrink only to {ratio:.0%}")
    if choice.method != compression.NONE:
        console.say(f"compressing the stream with {choice.method} here, decompressed in the pod ({choice.why}); "
                    "size and SHA-256 are checked on the tar stream")
    return choice


T = TypeVar("T")


class _Stopwatch:
    """Adds up the time of the calls it runs."""

    def __init__(self) -> None:
        self.total = 0.0

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.total += time.monotonic() - started


def _kind_in(src: Source, path: str) -> str:
    entry = src.entries.get(path)
    return f"a {entry.kind}" if entry is not None else "a directory (above its entries)"


def _check_room(kube: Kube, pod: RescuePod, src: Source, found: dict[str, Found], removed: set[str], *,
                sparse_kept: bool, label: str, free: bytes | None = None) -> None:
    """Refuse, before the first byte, a restore the volume has no room for.

    Files tar replaces and entries --clean removes give their space back; every file of the backup is
    written whole — also a sparse one, unless tar keeps it sparse (GNU sparse members with GNU tar).
    """
    out = free if free is not None else transfer.capture(kube, pod, scripts.FREE_SPACE, what="df")[0]
    available = scripts.parse_free_space(out)
    if available is None:
        return
    needed = 0
    expanded = 0
    for entry in src.entries:
        if entry.kind != FILE:
            continue
        whole = (entry.size + BLOCK - 1) // BLOCK * BLOCK
        if entry.sparse and sparse_kept:
            needed += entry.blocks * 512
        else:
            needed += whole
            if entry.sparse:
                expanded += whole - entry.blocks * 512
    freed = sum(f.blocks * 512 for p, f in found.items()
                if f.kind == FILE and f.links == 1
                and (p in src.entries.items or incremental_restore.under(p, removed)))
    freed += sum(f.blocks * 512 for p, f in found.items() if f.kind == DIR and p in removed)
    if needed * SPACE_MARGIN > available + freed:
        sparse = (f", of which {size(expanded)} are the holes of sparse files this image's tar writes out in full "
                  "(an image with GNU tar keeps them sparse: --image debian)") if expanded else ""
        raise DrError(f"the volume of {label} has {size(available)} free; restoring needs about {size(needed)} "
                      f"more than the files it replaces give back ({size(freed)}){sparse}. Nothing was written.",
                      hint="Expand the claim (if its storage class allows it), or restore into a larger claim.")
