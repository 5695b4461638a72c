"""Moving the archive over exec, checked end to end: size and SHA-256 in the pod and here, exit status.

Memory stays constant whatever the volume size: frames go from the socket straight into the backup
part (which hashes as it writes), and a restore reads the part in 1 MiB chunks. A transfer is good
only when the pod's count and digest equal ours, tar exited 0, and the exec status says success.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult, Timeouts, bounded_input, open_exec
from kubectl_dr.repo import PartWriter
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.volumes import rescue_pod, scripts
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod

CHUNK = 1 << 20


@dataclass(frozen=True)
class Checked:
    size: int
    sha256: str  # ours, equal to the pod's
    protocol: str
    warnings: str  # tar's messages on stderr (e.g. sockets it skipped)


def capture(kube: Kube, pod: RescuePod, script: str, *, stdin: bytes | None = None,
            what: str = "command") -> tuple[bytes, ExecResult]:
    """Run a short script in the pod (stdin bounded with head -c), return its stdout; exit 0 required."""
    out = bytearray()
    command = scripts.sh(script)
    if stdin is not None:
        command = bounded_input(command, len(stdin))
    stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=stdin is not None,
                       timeouts=Timeouts(idle=None if stdin is not None else 300.0))
    result = stream.run(stdin=[stdin] if stdin is not None else None, stdout=out.extend)
    result.check(f"{what} in pod {pod.namespace}/{pod.name}")
    return bytes(out), result


def estimate_size(kube: Kube, pod: RescuePod) -> int | None:
    """Roughly how many bytes the tar will be (du's kilobytes), for the ETA; None if du cannot tell."""
    try:
        out, _ = capture(kube, pod, f"du -s -k {rescue_pod.DATA} 2>/dev/null | cut -f1", what="du")
        return int(out.strip() or 0) * 1024 or None
    except (ValueError, VerificationError):
        return None


def _compare(report: scripts.StreamReport, size: int, digest: str, what: str,
             cause: str = "the stream was damaged or cut short", hint: str | None = None) -> None:
    if report.partial_blocks or report.size != size or report.sha256 != digest:
        raise VerificationError(
            f"{what}: the rescue pod saw {report.size} bytes with SHA-256 {report.sha256}, "
            f"we saw {size} bytes with SHA-256 {digest}: {cause}", hint=hint
        )


def receive(kube: Kube, pod: RescuePod, part: PartWriter, progress: Transfer) -> Checked:
    """tar the volume in the pod into `part`; raise unless both sides agree and tar succeeded."""
    stream = open_exec(kube, pod.namespace, pod.name, scripts.sh(scripts.backup_script()), container=CONTAINER)

    def sink(data: bytes) -> None:
        part.write(data)
        progress.advance(len(data))

    result = stream.run(stdout=sink)
    what = f"backup of the volume through pod {pod.namespace}/{pod.name}"
    report, warnings = _ended_well(result, what, tar_hint="Files that change while they are read make tar fail: "
                                                        "retry with --quiesce to stop the consumers during the backup.")
    _compare(report, part.size, part.sha256, what)
    return Checked(part.size, part.sha256, result.protocol, warnings)


def _ended_well(result: ExecResult, what: str, *, tar_hint: str) -> tuple[scripts.StreamReport, str]:
    """Both directions end alike: the pod's report, tar's exit code, then the exec status."""
    report = scripts.parse_report(result.stderr)
    warnings = scripts.strip_report(result.stderr)
    if report.tar_exit != 0:
        detail = f":\n{warnings}" if warnings else ""
        raise VerificationError(f"{what}: tar exited with code {report.tar_exit}{detail}", hint=tar_hint)
    result.check(what)
    return report, warnings


def _chunks(path: Path, progress: Transfer, digest: hashlib._Hash | None) -> Iterator[memoryview]:
    """The file in 1 MiB pieces of one reused buffer: each is sent before the next is read."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buf):
            chunk = view[:size]
            if digest is not None:
                digest.update(chunk)
            progress.advance(size)
            yield chunk


def send(kube: Kube, pod: RescuePod, archive: Path, size: int, *, keep_owners: bool, progress: Transfer,
         verified_sha256: str | None = None) -> Checked:
    """Extract `archive` into the volume in the pod; raise unless both sides agree and tar succeeded.

    `verified_sha256`: the archive's SHA-256 as our side computed it just before (a backup's verification
    pass). The pod's hash of what it received must equal it, which also catches an archive that changed
    since, so the file is not hashed a second time here. Without it (a plain tar file) we hash as we send.
    """
    # The script reads exactly `size` bytes itself (dd count_bytes), which is what v4 needs.
    command = scripts.sh(scripts.restore_script(size, keep_owners=keep_owners))
    # The pod says nothing until the end, so there is no idle limit: our own writes show the link is alive.
    stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=True,
                       timeouts=Timeouts(idle=None))
    digest = hashlib.sha256() if verified_sha256 is None else None
    result = stream.run(stdin=_chunks(archive, progress, digest))
    what = f"restore into the volume through pod {pod.namespace}/{pod.name}"
    report, warnings = _ended_well(result, what, tar_hint="Nothing was scaled back to a state you did not have; "
                                                        "run the same restore again once the cause is fixed.")
    if digest is not None:
        ours, cause, hint = digest.hexdigest(), "the stream was damaged or cut short", None
    else:
        assert verified_sha256 is not None
        ours = verified_sha256
        cause = "the stream was damaged or cut short, or the archive changed after it was verified"
        hint = "Verify the backup again (`kubectl dr backups verify`) and rerun the restore."
    if progress.done != size:
        raise VerificationError(f"{what}: the archive is {size} bytes but {progress.done} were read from it"
                                + (" (it changed after it was verified)" if hint else ""), hint=hint)
    _compare(report, size, ours, what, cause, hint)
    return Checked(size, ours, result.protocol, warnings)
