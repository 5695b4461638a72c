"""`pvc restore`: a verified backup into the volume, with the consumers stopped and started again.

Nothing is touched until the archive is proven safe (no entry can land outside the volume) and the
backup intact (sizes and SHA-256 of every part against the manifest). Order: the listing, then
confirmation, then the checksum pass; a claim nobody uses gets its rescue pod meanwhile (a pod that
does nothing until the transfer, deleted if the check fails), while consumers are scaled to 0
(records on the objects) only for a backup known to be intact. Then the read-write rescue pod with
the consumers' identity, the archive streamed in and checked on both sides, directory and symlink
mtimes set (busybox tar does not), the tree checked entry by entry against the archive, `--clean`
extras removed, the pod deleted and the consumers scaled back.

Every step can be repeated: tar overwrites what an interrupted run left half-written, so a failed or
interrupted restore is finished by running it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.repo import Backup, Repository
from kubectl_dr.ui.output import count
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.volumes import archive, quiesce, rescue_pod, scripts, security, transfer, tree_check
from kubectl_dr.volumes.archive import DIR, SYMLINK, Listing
from kubectl_dr.volumes.backup import PART, TYPE
from kubectl_dr.volumes.claims import get_claim, require_nodes_ready
from kubectl_dr.volumes.rescue_pod import RescuePod


@dataclass
class RestoreOptions:
    namespace: str
    claim: str
    source: str  # backup ID, prefix, "latest", a backup directory, or a tar file
    image: str = rescue_pod.DEFAULT_IMAGE
    clean: bool = False


@dataclass
class Archive:
    path: Path
    size: int
    sha256: str | None
    backup_id: str | None


def resolve_archive(repo: Repository, opts: RestoreOptions,
                    say: Callable[[str], None]) -> tuple[Archive, Backup | None, Listing]:
    """The archive to restore and its listing, which refuses unsafe archives; the backup it belongs to
    (None for a plain tar file), whose checksums `Verification` checks before anything is touched.

    A listing that fails on a backup is checked against the checksums first: a damaged backup is the
    error to report, whatever the listing tripped over.
    """
    candidate = Path(opts.source).expanduser()
    if candidate.is_file():
        say(f"restoring from the tar file {candidate} (no manifest: it cannot be checked against a checksum)")
        return Archive(candidate.absolute(), candidate.stat().st_size, None, None), None, archive.list_file(candidate)
    match = {"namespace": opts.namespace, "pvc": opts.claim} if opts.source == "latest" else None
    backup: Backup = repo.resolve(opts.source, TYPE, match)
    part = backup.manifest.part(PART)
    found = Archive(backup.part_path(PART), part.size, part.sha256, backup.id)
    # Listing reads every header (about 25 µs an entry): a volume of a million files takes a while.
    say(f"listing backup {backup.id} (every entry must land inside the volume)")
    try:
        listing = archive.list_file(found.path)
    except DrError:
        say(f"the archive of backup {backup.id} cannot be listed; checking it against its checksums")
        repo.verify(backup)
        raise
    return found, backup, listing


class _Cancelled(Exception):
    pass


class Verification:
    """The checksum pass over a backup, in a thread, so that a rescue pod can start meanwhile.

    `with Verification(repo, backup, say) as v: …; v.wait()`: `wait` raises if the backup is damaged.
    Leaving the block early (an error or Ctrl-C in the main thread) stops the pass at its next chunk.
    """

    def __init__(self, repo: Repository, backup: Backup | None, say: Callable[[str], None]) -> None:
        self.repo, self.backup, self.say = repo, backup, say
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1, "verify-backup")
        self._future: Future[None] | None = None

    def __enter__(self) -> Verification:
        if self.backup is not None:
            self.say(f"verifying backup {self.backup.id} (sizes and SHA-256 of every part)")
            self._future = self._pool.submit(self._run, self.backup)
        return self

    def _run(self, backup: Backup) -> None:
        with Transfer(f"verify {backup.id}", sum(p.size for p in backup.manifest.parts)) as bar:
            def advance(size: int) -> None:
                if self._cancel.is_set():
                    raise _Cancelled
                bar.advance(size)

            self.repo.verify(backup, progress=advance)

    def wait(self) -> None:
        if self._future is not None:
            self._future.result()

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=True)


def confirm(question: str, yes: bool, ask: Callable[[str], bool] | None) -> None:
    if yes:
        return
    if ask is None:
        raise DrError(f"refusing to {question} without confirmation",
                      hint="Pass --yes to confirm (there is no terminal to ask on).")
    if not ask(f"{question[0].upper()}{question[1:]}?"):
        raise DrError("aborted: nothing was changed")


def run(kube: Kube, repo: Repository, opts: RestoreOptions, say: Callable[[str], None], *, yes: bool,
        ask: Callable[[str], bool] | None) -> dict[str, Any]:
    claim = get_claim(kube, opts.namespace, opts.claim)
    source, backup, listing = resolve_archive(repo, opts, say)
    # kubectl dr's own pods (left by a killed run) are removed below, never taken for consumers.
    consumers, own = quiesce.consumers(kube, opts.namespace, opts.claim)
    quiesce.refuse_unstoppable(consumers, opts.namespace, opts.claim, "restore")
    require_nodes_ready(kube, claim, quiesce.placed([c for c in consumers if c.pods]), "restore")
    level = security.namespace_level(kube, opts.namespace)
    identity = security.consumer_identity([c.security_context() for c in consumers])
    sec = security.plan(level, identity, write=True)
    for note in sec.notes:
        say(f"note: {note}")

    stops = f", stopping {', '.join(c.ref for c in consumers)}" if consumers else ""
    how = "replacing" if not opts.clean else "replacing it and removing everything else in"
    confirm(f"restore {count(listing.summary()['entries'], 'entry', 'entries')} ({source.size} bytes) into "
            f"{opts.namespace}/{opts.claim}, {how} what the archive contains{stops}", yes, ask)

    rescue_pod.remove_leftovers(kube, claim, own, say)

    def start_pod(meanwhile: str = "") -> RescuePod:
        say(f"starting rescue pod for {opts.namespace}/{opts.claim}, volume mounted read-write{meanwhile}")
        return rescue_pod.start(kube, claim, image=opts.image, purpose="pvc-restore", read_only=False,
                                node=None, security=sec, progress=say)

    pod = None
    with Verification(repo, backup, say) as verification:
        # Nothing to stop: the pod (scheduling, image pull, volume attach) starts while the backup is
        # verified; it does not touch the volume before the transfer, and is deleted if the check fails.
        # Consumers are stopped only for a backup known to be intact.
        if not consumers and backup is not None:
            pod = start_pod(" (while the backup is verified)")
        verification.wait()
    stopped = None
    if consumers:
        say(f"stopping {', '.join(c.ref for c in consumers)}")
        stopped = quiesce.stop(kube, consumers, run_id=quiesce.run_id("restore"),
                               reason=f"kubectl dr pvc restore {opts.namespace}/{opts.claim}", progress=say)
    if pod is None:
        pod = start_pod()
    sec = pod.security  # the plan the pod runs with (Pod Security admission may have asked for another)
    with Transfer(f"restore {opts.namespace}/{opts.claim}", source.size) as bar:
        checked = transfer.send(kube, pod, source.path, source.size, keep_owners=sec.root, progress=bar,
                                verified_sha256=source.sha256)
    if checked.warnings:
        say(f"tar reported:\n{checked.warnings}")

    removed: list[str] = []
    if opts.clean:
        found = tree_check.parse_listing(transfer.capture(kube, pod, scripts.listing_script(), what="listing")[0])
        removed = tree_check.extras(listing, found)
        if removed:
            say(f"--clean: removing {count(len(removed), 'entry', 'entries')} that are not in the archive")
            transfer.capture(kube, pod, "set -e; cat > /scratch/rm.sh; sh /scratch/rm.sh",
                             stdin=scripts.remove_script(removed), what="removal")
    set_mtimes(kube, pod, listing, strict=sec.root)
    found = tree_check.parse_listing(transfer.capture(kube, pod, scripts.listing_script(), what="listing")[0])
    problems = tree_check.differences(listing, found, owners=sec.root, modes=sec.root,
                                      times_of_uid=None if sec.root else int(sec.pod["runAsUser"]))
    if opts.clean:
        problems += [f"{p!r} is not in the archive and was not removed" for p in tree_check.extras(listing, found)]
    tree_check.require_match(problems, f"the restored volume {opts.namespace}/{opts.claim} does not match")
    say(f"checked {count(len(listing.entries), 'entry', 'entries')} in the volume against the archive: all match")

    pod.delete()
    if stopped is not None:
        say("starting the consumers again")
        stopped.restore()
    return {
        "kind": "PvcRestore",
        "namespace": opts.namespace,
        "pvc": opts.claim,
        "backup": source.backup_id,
        "archive": str(source.path),
        "size": checked.size,
        "sha256": checked.sha256,
        "execProtocol": checked.protocol,
        "seconds": round(bar.elapsed, 3),
        "entries": listing.summary(),
        "removed": removed,
        "consumers": [c.ref for c in consumers],
        "securityContext": sec.describe(),
    }


def set_mtimes(kube: Kube, pod: RescuePod, listing: Listing, *, strict: bool) -> None:
    items = [(e.path, e.mtime) for e in listing.entries.values() if e.kind in (DIR, SYMLINK)]
    # Deepest first is not needed (touching an entry never changes its parent), but the root goes last
    # for readability of the script when debugging.
    items.sort(key=lambda item: -len(item[0]))
    if items:
        transfer.capture(kube, pod, "set -e; cat > /scratch/touch.sh; sh /scratch/touch.sh",
                         stdin=scripts.touch_script(items, strict=strict), what="setting directory and symlink times")
