"""`kubectl dr pvc rescue` with a real terminal: a pseudo-terminal drives the shell as a person would."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from tests.cli_runner import clean_env, executable
from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir
from tests.e2e.test_pvc_consumers import deployment, replicas_and_records, running_pods
from tests.polling import eventually


@dataclass
class Terminal:
    """kubectl-dr running on the slave side of a pty; we are the person at the keyboard (master side)."""

    proc: subprocess.Popen[bytes]
    master: int
    slave: int
    seen: bytearray = field(default_factory=bytearray)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, text: bytes, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not shown within {timeout}s; the terminal shows:\n{bytes(self.seen)!r}"
            assert self.proc.poll() is None or select.select([self.master], [], [], 0)[0], (
                f"kubectl-dr exited {self.proc.returncode} before showing {text!r}:\n{bytes(self.seen)!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the slave side is closed
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    assert text in self.seen, f"{text!r} never shown; the terminal shows:\n{bytes(self.seen)!r}"
                self.seen += chunk

    def wait(self, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"still running; the terminal shows:\n{bytes(self.seen)!r}"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                with suppress(OSError):
                    self.seen += os.read(self.master, 65536)
        self.drain()
        return int(self.proc.returncode)

    def drain(self) -> None:
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.seen += chunk


@contextmanager
def terminal(cluster: Any, *args: str) -> Iterator[Terminal]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "TERM": "xterm"})
    proc = subprocess.Popen([executable(), *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    term = Terminal(proc, master, slave)
    try:
        yield term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_interactive_shell_exit_code_and_file(cluster: Any) -> None:
    ns = new_namespace(cluster, "tty")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    with terminal(cluster, "pvc", "rescue", "data", "-n", ns) as term:
        saved = termios.tcgetattr(term.slave)
        term.expect(b"/data # ")  # busybox sh's prompt, in the volume
        assert len(managed_pods(cluster, ns)) == 1
        term.type(b"echo hi > /data/x; exit 3\r")
        code = term.wait()
        assert code == 3, bytes(term.seen)
        assert b"echo hi > /data/x; exit 3" in term.seen  # the remote tty echoed what we typed
        assert termios.tcgetattr(term.slave) == saved  # raw mode undone
    assert (vol / "x").read_text() == "hi\n"
    assert managed_pods(cluster, ns) == []


def test_ctrl_c_keys_go_to_the_shell_sigint_ends_the_session_and_scales_back(cluster: Any) -> None:
    ns = new_namespace(cluster, "ttyint")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    with terminal(cluster, "pvc", "rescue", "data", "-n", ns, "--quiesce") as term:
        saved = termios.tcgetattr(term.slave)
        term.expect(b"/data # ", timeout=150)
        assert replicas_and_records(cluster, ns, "deployment/app")[0] == 0  # stopped for the session
        # Ctrl-C typed on the keyboard is a key for the remote shell (raw mode), as with kubectl exec -it:
        # it interrupts the remote sleep, and the session goes on.
        term.type(b"sleep 300\r")
        time.sleep(1)
        term.type(b"\x03")
        term.type(b"echo still-$((20+22))\r")
        term.expect(b"still-42")
        assert term.proc.poll() is None
        # SIGINT to kubectl-dr itself (what a terminal's Ctrl-C is outside raw mode) ends it mid-command.
        term.type(b"sleep 300\r")
        time.sleep(1)
        term.proc.send_signal(signal.SIGINT)
        code = term.wait(timeout=120)
        assert code == 130, bytes(term.seen)
        assert b"interrupted" in term.seen and b"cleaning up: delete rescue pod" in term.seen
        assert termios.tcgetattr(term.slave) == saved
    assert managed_pods(cluster, ns) == []
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running again")


def test_keys_typed_while_the_consumers_stop_reach_the_shell(cluster: Any) -> None:
    """A person types while the app is stopping: the keys are held and the shell runs them once it is up."""
    ns = new_namespace(cluster, "ttyahead")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    with terminal(cluster, "pvc", "rescue", "data", "-n", ns, "--quiesce") as term:
        term.expect(b"held until the shell is up")  # said before anything is stopped
        assert b"/data # " not in term.seen
        term.type(b"echo typed-$((40+2)) | tee /data/ahead\r")
        term.expect(b"/data # ", timeout=150)
        term.expect(b"typed-42")  # the held line ran in the shell (the local echo shows only $((40+2)))
        eventually(lambda: (volume_dir(cluster, ns) / "ahead").exists(), timeout=30, what="the held line to run")
        term.type(b"exit\r")
        assert term.wait() == 0, bytes(term.seen)
    assert (volume_dir(cluster, ns) / "ahead").read_text() == "typed-42\n"
    assert managed_pods(cluster, ns) == []
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
