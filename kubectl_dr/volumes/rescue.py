"""`pvc rescue`: a shell (or one command) in a pod that mounts the claim; the pod goes when it ends.

The terminal is put in raw mode so keys (Ctrl-C included) reach the remote shell, as with
`kubectl exec -it`; the window size is sent at start and on SIGWINCH (resize channel). The local
terminal is restored however the session ends, and the pod is deleted by the cleanup stack.

A command given `stdin` (`-i`, as `kubectl exec -i`) reads the local stdin, and sees its end: only exec
protocol v5 can close a command's stdin, so only v5 is offered then. On a v4-only API server a command reading
to the end (`cat > /data/f`) would wait for ever, so the exec is refused there before the command starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import RESIZE, V5, ExecResult, ExecStream, Timeouts, open_exec
from kubectl_dr.session import Session
from kubectl_dr.volumes import rescue_pod, scripts
from kubectl_dr.volumes.access import RESCUE, AccessPlan, plan_access
from kubectl_dr.volumes.exposer import Exposure, claim_lease, say_plan
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod


@dataclass
class RescueOptions:
    namespace: str
    claim: str
    command: list[str] = field(default_factory=list)
    image: str = rescue_pod.DEFAULT_IMAGE
    quiesce: bool = False
    read_only: bool = False
    stdin: bool = False  # the command reads the local stdin (-i)


@dataclass
class RescuePlan:
    access: AccessPlan
    dry_run: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "PvcRescuePlan", "dryRun": self.dry_run, **self.access.to_dict(),
                "podAcceptedByServer": self.dry_run == "server" or None}

    def summary(self) -> str:
        a = self.access
        lines = [f"(dry run) would open a rescue pod on {a.claim.namespace}/{a.claim.name}"
                 + (f" on node {a.node}" if a.node else "")]
        if a.stop:
            lines.append(f"  stop {', '.join(c.ref for c in a.consumers)} for the session")
        return "\n".join(lines) + "\n"


def run(session: Session, opts: RescueOptions, interactive: bool) -> ExecResult | RescuePlan:
    kube, console, dry_run = session.kube, session.console, session.dry_run
    """The pod, the session in it (a shell or the command), and everything put back afterwards."""
    access = plan_access(kube, opts.namespace, opts.claim, job=RESCUE, read_only=opts.read_only, quiesce=opts.quiesce)
    say_plan(console, access)
    if dry_run == "client":
        claim_lease(kube, access, session.run, "client").acquire()
        return RescuePlan(access, "client")
    with Exposure(session, access, opts.image, "pvc-rescue") as exposure:
        if interactive:
            console.say("starting the rescue pod; what you type meanwhile is held until the shell is up")
        if access.stop:
            console.say("the consumers start again when the session ends")
            exposure.stop_consumers()
        pod = exposure.start(read_only=opts.read_only)
        if pod is None:
            return RescuePlan(access, dry_run)
        console.say(f"the volume is at {scripts.DATA}")
        result = (interactive_session(kube, pod, ["sh"]) if interactive
                  else run_command(kube, pod, opts.command, stdin=opts.stdin))
        exposure.finish()
    return result


def run_command(kube: Kube, pod: RescuePod, command: list[str], *, stdin: bool = False) -> ExecResult:
    """The command with its output passed through; its exit code becomes ours. ``stdin``: it reads ours."""
    try:
        stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=stdin,
                           protocols=[V5] if stdin else None, timeouts=Timeouts(idle=None))
    except DrError as exc:
        if stdin and "not supported" in str(exc):
            raise DrError("-i needs an API server that can end a command's input (exec protocol "
                          f"{V5}, Kubernetes 1.30 or later); this one cannot, so the command was not started",
                          hint="Copy the data into the volume with `kubectl dr pvc restore` from a tar file, "
                               "or run the command without -i.") from None
        raise
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(target: object) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            target.write(data)  # type: ignore[attr-defined]
            target.flush()  # type: ignore[attr-defined]
        return sink

    return stream.run(stdin=local_input() if stdin else None, stdout=write(out), stderr=write(err))


def local_input() -> Iterator[bytes]:
    """Our stdin in pieces as they come, and an empty piece after 0.2 s without any: the sender then sees a
    command that ended without reading everything (`head -1`) instead of waiting for input that may never come."""
    source = sys.stdin.buffer
    try:
        fd = source.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # not a file: read to its end
        while chunk := source.read(1 << 16):
            yield chunk
        return
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            yield b""
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        yield chunk


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode for the session; keys typed before it (while the consumers stopped and the pod started) stay
    queued and go to the shell first. tty.setraw's default TCSAFLUSH would discard them."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _send_size(stream: ExecStream) -> None:
    size = shutil.get_terminal_size()
    payload = json.dumps({"Width": size.columns, "Height": size.lines}).encode()
    with contextlib.suppress(Exception):
        stream.send_channel(RESIZE, payload)


def interactive_session(kube: Kube, pod: RescuePod, command: list[str]) -> ExecResult:
    """A tty session: local keys go to the pod, its output to our terminal, until the shell exits."""
    stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, stdin=True, tty=True,
                       timeouts=Timeouts(idle=None))
    outcome: list[ExecResult] = []
    failure: list[BaseException] = []
    out = sys.stdout.buffer

    def sink(data: bytes) -> None:
        out.write(data)
        out.flush()

    def reader() -> None:
        try:
            outcome.append(stream.pump(stdout=sink, stderr=sink))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=reader, name="rescue-tty", daemon=True)
    fd = sys.stdin.fileno()
    previous = signal.getsignal(signal.SIGWINCH)

    def on_resize(_signum: int, _frame: FrameType | None) -> None:
        _send_size(stream)

    signal.signal(signal.SIGWINCH, on_resize)
    try:
        with raw_terminal(fd):
            thread.start()
            _send_size(stream)
            while thread.is_alive():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(fd, 4096)
                if not data:
                    stream.close_stdin()
                    break
                with contextlib.suppress(Exception):
                    stream.send(data)
            thread.join()
    finally:
        signal.signal(signal.SIGWINCH, previous)
        stream.close()
    if failure:
        raise failure[0]
    return outcome[0]
