"""Moving bytes over exec, checked end to end: size and SHA-256 in the pod and here, exit status required.

Memory stays constant whatever the volume size: frames go from the socket straight into the backup
part (which hashes as it writes), and a restore reads the archive in 1 MiB chunks. A transfer is good
only when the pod's count and digest equal ours and the exec status says success; how tar ended is
judged by the job (a backup's tar may fail harmlessly on what it could not read, which the listing
then accounts for).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr.console import Progress
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult, Timeouts, bounded_input, open_exec
from kubectl_dr.volumes import compression, listing, scripts
from kubectl_dr.volumes.listing import Found, ListingChanged
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod

CHUNK = 1 << 20
LISTING_ATTEMPTS = 3
LINK_PROBE = 4 << 20  # bytes timed each way for --compress auto: a third of a second at 100 Mbit/s


@dataclass(frozen=True)
class Checked:
    size: int
    sha256: str  # ours, equal to the pod's
    protocol: str
    tar_exit: int
    warnings: str  # tar's messages on stderr
    wire: int = 0  # bytes that crossed the link (compressed), when not `size`


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


def upload(kube: Kube, pod: RescuePod, dest: str, data: bytes, what: str, *, then: str = "") -> bytes:
    """`data` into the pod's scratch file `dest`, counted there (all of it or an error), then `then` run;
    returns its stdout."""
    script = scripts.upload_script(dest, len(data)) + (f"\n{then}" if then else "")
    out, _ = capture(kube, pod, script, stdin=data, what=what)
    return out


def run_script(kube: Kube, pod: RescuePod, script: bytes, what: str) -> None:
    """A generated script (removals, fixes) sent on stdin into a file and run there: no argument limits."""
    if script.count(b"\n") > 1:
        job = f"{scripts.SCRATCH}/job.sh"
        upload(kube, pod, job, script, what, then=f"sh {job}")


def _compare(report: scripts.StreamReport, size: int, digest: str, what: str,
             cause: str = "the stream was damaged or cut short", hint: str | None = None) -> None:
    if report.partial_blocks or report.size != size or report.sha256 != digest:
        raise VerificationError(
            f"{what}: the rescue pod saw {report.size} bytes with SHA-256 {report.sha256}, "
            f"we saw {size} bytes with SHA-256 {digest}: {cause}", hint=hint
        )


def receive(kube: Kube, pod: RescuePod, script: str, sink: Callable[[bytes], None],
            local: Callable[[], tuple[int, str]], what: str, *, gzipped: bool = False,
            upload: tuple[str, bytes] | None = None) -> Checked:
    """Run an out-script, give its stdout to `sink`; raise unless the pod's count and digest equal
    `local()` (what the sink counted and hashed) and the exec succeeded.

    `gzipped`: the script compresses after its count and hash; `sink` gets the decompressed stream, so
    both sides compare the same bytes, and the compressed stream must end exactly where gzip ended it.

    `upload` (scratch path, bytes): written there first, in the same exec (one round trip instead of
    two), counted in the pod as `upload()` counts it: a short upload ends the exec before the script runs.
    """
    command = scripts.sh(script)
    if upload is not None:
        dest, data = upload
        command = bounded_input(scripts.sh(scripts.after_upload(dest, len(data), script)), len(data))
    stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=upload is not None)
    decoder = compression.Decoder(sink) if gzipped else None
    result = stream.run(stdin=[upload[1]] if upload is not None else None,
                        stdout=decoder.feed if decoder is not None else sink)
    if upload is not None and result.exit_code not in (None, 0) and scripts.MARKER.encode() not in result.stderr:
        result.check(f"uploading {upload[0]} for the {what}")  # the upload failed: the script never ran
    if result.status is None or result.exit_code is None or result.exit_code < 0:
        result.check(what)  # the stream or the pod broke: that is the error, not a missing report
    report = scripts.parse_report(result.stderr)
    warnings = scripts.strip_report(result.stderr)
    if result.exit_code != report.tar_exit:
        result.check(what)  # the script itself failed after reporting
    if decoder is not None:
        decoder.finish()
    size, digest = local()
    _compare(report, size, digest, what)
    return Checked(size, digest, result.protocol, report.tar_exit, warnings,
                   wire=decoder.wire if decoder is not None else size)


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        self.hash.update(chunk)

    def local(self) -> tuple[int, str]:
        return len(self.data), self.hash.hexdigest()


def receive_fed(kube: Kube, pod: RescuePod, script: str, feed: Callable[[bytes], None], progress: Progress,
                what: str) -> Checked:
    """`receive` of a stream kept nowhere: each chunk counted and hashed here, fed to `feed` (a tar reader
    that checks it and hands its files on as they come) and counted on `progress`."""
    digest = hashlib.sha256()
    received = 0

    def sink(data: bytes) -> None:
        nonlocal received
        received += len(data)
        digest.update(data)
        feed(data)
        progress.advance(len(data))

    return receive(kube, pod, script, sink, lambda: (received, digest.hexdigest()), what)


def list_volume(kube: Kube, pod: RescuePod, *, attempts: int = LISTING_ATTEMPTS,
                ctime: bool = False) -> dict[str, Found]:
    """Every entry of the volume as the pod's `stat` sees it, the transfer checked like any other.

    A volume an app keeps changing may list differently in the listing's two walks: listed again, a
    few times, before that is an error.
    """
    return _listed(kube, pod, scripts.listing_script(ctime=ctime), attempts, ctime=ctime)[0]


def list_volume_clocked(kube: Kube, pod: RescuePod, *,
                        attempts: int = LISTING_ATTEMPTS) -> tuple[dict[str, Found], int]:
    """`list_volume` with change times, and the node's clock (whole seconds) read just before the listing."""
    script = scripts.listing_script(ctime=True, clock=True)
    return _listed(kube, pod, script, attempts, ctime=True, clocked=True)


def list_volume_after(kube: Kube, pod: RescuePod, job: bytes, *, attempts: int = LISTING_ATTEMPTS) -> dict[str, Found]:
    """`job` (a generated script: the fixes a restore can predict) run in the pod, then the volume listed, in
    one exec: the round trip of a `run_script` saved. The job's failures are ignored here; what it was to set
    is what the listing is then checked for. A listing tried again runs the job again (it sets values, so
    running it twice sets the same)."""
    job_path = f"{scripts.SCRATCH}/job.sh"
    script = f"sh {job_path} >/dev/null 2>&1 || true\n{scripts.listing_script()}"
    return _listed(kube, pod, script, attempts, ctime=False, upload=(job_path, job))[0]


def _listed(kube: Kube, pod: RescuePod, script: str, attempts: int, *, ctime: bool,
            clocked: bool = False, upload: tuple[str, bytes] | None = None) -> tuple[dict[str, Found], int]:
    what = f"listing of the volume through pod {pod.namespace}/{pod.name}"
    for attempt in range(attempts):
        buffer = _Buffer()
        receive(kube, pod, script, buffer.write, buffer.local, what, upload=upload)
        data, clock = bytes(buffer.data), 0
        if clocked:
            first, newline, rest = data.partition(b"\n")
            if not newline or not first.isdigit():
                raise VerificationError(f"{what}: the node's clock did not come first ({first[:40]!r})")
            data, clock = rest, int(first)
        try:
            return listing.parse(data, ctime=ctime), clock
        except ListingChanged:
            if attempt + 1 == attempts:
                raise ListingChanged(f"{what}: the volume kept changing while it was listed "
                                     f"({attempts} attempts)",
                                     hint="Stop what writes to it (--quiesce stops the claim's consumers).") from None
    raise AssertionError("unreachable")


def _chunks(path: Path, progress: Progress, digest: hashlib._Hash | None) -> Iterator[memoryview]:
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


def link_rate(kube: Kube, pod: RescuePod, *, into_pod: bool) -> float | None:
    """Bytes per second over the exec link, one way, timed with `LINK_PROBE` bytes (None: unusable).

    Only the bytes are timed, not the exec's start (a sandbox, a process): out of the pod from the first
    byte to the last; into it from the pod's "ready" line until it says it read them all, so what waits
    in socket buffers is not counted as sent.
    """
    target = f"timing the link through pod {pod.namespace}/{pod.name}"
    first: list[float] = []
    got, skipped = [0], [0]
    ready = threading.Event()

    def sink(data: bytes) -> None:
        # Out of the pod the clock starts after the first quarter: what buffers on the way held back
        # (and then let go at once) is not the link's rate. Into it, at the pod's "ready" line.
        ready.set()
        if first:
            got[0] += len(data)
            return
        skipped[0] += len(data)
        if into_pod or skipped[0] >= LINK_PROBE // 4:
            first.append(time.monotonic())

    if into_pod:
        def probe() -> Iterator[bytes]:
            if ready.wait(60):  # the pod is listening: from here on only the bytes take time
                yield bytes(LINK_PROBE)

        command = bounded_input(scripts.sh(scripts.LINK_IN_SCRIPT), LINK_PROBE)
        stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=True)
        stream.run(stdin=probe(), stdout=sink).check(target)
        elapsed = time.monotonic() - first[0] if first else 0.0
        return LINK_PROBE / elapsed if elapsed > 0 else None
    stream = open_exec(kube, pod.namespace, pod.name, scripts.sh(scripts.link_out_script(LINK_PROBE)),
                       container=CONTAINER)
    stream.run(stdout=sink).check(target)
    elapsed = time.monotonic() - first[0] if first else 0.0
    return got[0] / elapsed if elapsed > 0 and got[0] else None


def sample_ratio(kube: Kube, pod: RescuePod, paths: list[str]) -> float | None:
    """How far gzip in the pod shrinks the first MiB of each of `paths` (None: nothing to sample)."""
    out, _ = capture(kube, pod, scripts.sample_script(paths, compression.SAMPLE), what="sampling the data")
    try:
        raw, packed = (int(v) for v in out.split()[:2])
    except ValueError:
        return None
    return packed / raw if raw else None


def send(kube: Kube, pod: RescuePod, archive: Path, size: int, *, keep_owners: bool, progress: Progress,
         verified_sha256: str | None = None, compress: str = compression.NONE,
         command: str | None = None) -> Checked:
    """Extract `archive` into the volume in the pod; raise unless both sides agree and tar succeeded.

    `verified_sha256`: the archive's SHA-256 as our side computed it just before (a backup's verification
    pass). The pod's hash of what it received must equal it, which also catches an archive that changed
    since, so the file is not hashed a second time here. Without it (a plain tar file) we hash as we send.
    `compress` (gzip, xz): compressed here, decompressed in the pod before its count and hash, so both
    sides still compare the tar stream. `command`: what reads the stream in the pod instead of tar.
    """
    tar = pod.tools.tar if pod.tools is not None else scripts.BUSYBOX
    # The script reads exactly `size` bytes itself (dd count_bytes), which is what v4 needs.
    argv = scripts.sh(scripts.restore_script(size, tar=tar, keep_owners=keep_owners, compress=compress,
                                             command=command))
    # The pod says nothing until the end, so there is no idle limit: our own writes show the link is alive.
    stream = open_exec(kube, pod.namespace, pod.name, argv, container=CONTAINER, stdin=True,
                       timeouts=Timeouts(idle=None))
    digest = hashlib.sha256() if verified_sha256 is None else None
    wire = [0]
    chunks: Iterator[bytes | memoryview] = _chunks(archive, progress, digest)
    if compress != compression.NONE:
        chunks = compression.compressed(chunks, compress, wire)
    result = stream.run(stdin=chunks)
    what = f"restore into the volume through pod {pod.namespace}/{pod.name}"
    report = scripts.parse_report(result.stderr)
    warnings = scripts.strip_report(result.stderr)
    if report.tar_exit != 0:
        detail = f":\n{warnings}" if warnings else ""
        reader = "tar" if command is None else f"`{command}`"  # the in-place writer's failures are its own
        raise VerificationError(f"{what}: {reader} exited with code {report.tar_exit}{detail}")
    result.check(what)
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
    return Checked(size, ours, result.protocol, 0, warnings, wire=wire[0] if compress != compression.NONE else size)
