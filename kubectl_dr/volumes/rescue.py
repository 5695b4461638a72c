"""`pvc rescue`: a shell (or one command) in a pod that mounts the claim; the pod goes when it ends.

The terminal is put in raw mode so keys (Ctrl-C included) reach the remote shell, as with
`kubectl exec -it`; the window size is sent at start and on SIGWINCH (resize channel). The local
terminal is restored however the session ends, and the pod is deleted by the cleanup stack.
"""

from __future__ import annotations

import contextlib
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

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import RESIZE, ExecResult, ExecStream, Timeouts, open_exec
from kubectl_dr.volumes import quiesce, rescue_pod, security
from kubectl_dr.volumes.claims import get_claim, require_nodes_ready
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod


@dataclass
class RescueOptions:
    namespace: str
    claim: str
    command: list[str] = field(default_factory=list)
    image: str = rescue_pod.DEFAULT_IMAGE
    quiesce: bool = False
    read_only: bool = False


def start_pod(kube: Kube, opts: RescueOptions, say: Callable[[str], None]) -> RescuePod:
    claim = get_claim(kube, opts.namespace, opts.claim)
    # kubectl dr's own pods (another run's, or one left by a killed run) are never consumers to stop.
    consumers, own = quiesce.consumers(kube, opts.namespace, opts.claim)
    running = [c for c in consumers if c.pods]
    node = None
    if opts.quiesce and consumers:
        quiesce.refuse_unstoppable(consumers, opts.namespace, opts.claim, "quiesce")
        require_nodes_ready(kube, claim, quiesce.placed(running), "quiesce")
        if own:
            rescue_pod.remove_leftovers(kube, claim, own, say)
        say(f"stopping {', '.join(c.ref for c in consumers)} (--quiesce); they start again when the shell ends")
        quiesce.stop(kube, consumers, run_id=quiesce.run_id("rescue"),
                     reason=f"kubectl dr pvc rescue {opts.namespace}/{opts.claim}", progress=say)
    elif running and claim.single_pod:
        raise DrError(f"{opts.namespace}/{opts.claim} is ReadWriteOncePod and in use by "
                      f"{', '.join(c.ref for c in running)}: a second pod cannot mount it",
                      hint="Pass --quiesce to stop the consumers for the duration of the session.")
    elif own and claim.single_pod:
        rescue_pod.remove_leftovers(kube, claim, own, say)  # a ReadWriteOncePod claim admits no second pod
    else:
        if own:
            say(f"note: rescue pods of an earlier run still mount the claim: {', '.join(p.name for p in own)}")
        nodes = quiesce.consumer_nodes(running) if claim.single_node else []
        if claim.single_node and not nodes:
            nodes = sorted({p.node for p in own if p.node})
        node = nodes[0] if nodes else None
        if node:
            require_nodes_ready(kube, claim, {node: quiesce.placed(running).get(node) or [p.name for p in own]},
                                "open a rescue shell for")
    identity = security.consumer_identity([c.security_context() for c in consumers])
    sec = security.plan(security.namespace_level(kube, opts.namespace), identity, write=not opts.read_only)
    for note in sec.notes:
        say(f"note: {note}")
    where = f" on node {node}" if node else ""
    say(f"starting rescue pod for {opts.namespace}/{opts.claim}{where}; the volume is at {rescue_pod.DATA}")
    return rescue_pod.start(kube, claim, image=opts.image, purpose="pvc-rescue", read_only=opts.read_only,
                            node=node, security=sec, progress=say)


def run_command(kube: Kube, pod: RescuePod, command: list[str]) -> ExecResult:
    """The command with its output passed through; its exit code becomes ours."""
    stream = open_exec(kube, pod.namespace, pod.name, command, container=CONTAINER, timeouts=Timeouts(idle=None))
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(target: object) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            target.write(data)  # type: ignore[attr-defined]
            target.flush()  # type: ignore[attr-defined]
        return sink

    return stream.run(stdout=write(out), stderr=write(err))


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _send_size(stream: ExecStream) -> None:
    size = shutil.get_terminal_size()
    payload = json.dumps({"Width": size.columns, "Height": size.lines}).encode()
    with contextlib.suppress(Exception):
        stream.send_channel(RESIZE, payload)


def interactive(kube: Kube, pod: RescuePod, command: list[str]) -> ExecResult:
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
