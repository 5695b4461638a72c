"""``PodStreams`` for the loopback nodes: exec over WebSocket and container logs.

Exec follows the kubelet/API server remotecommand WebSocket server (wsstream):
- subprotocols ``v5.channel.k8s.io`` and ``v4.channel.k8s.io`` (the allowed list is configurable to
  emulate servers older than 1.30); the first of the *client's* offers that is allowed wins, and no
  match is refused before anything starts;
- every frame is one channel byte then data: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; v5
  adds 255 = close, whose payload byte names the channel to half-close (stdin → EOF for the process);
- right after the upgrade the server writes one empty frame on the lowest writable channel
  (stdout, else stderr, else status), as createWebSocketStreams does;
- the exit status is one JSON ``metav1.Status`` on channel 3, built as remotecommand.ServeExec does.
Data moves in bounded chunks and each side waits for the other (drain), so memory stays constant
whatever the size of the transfer. A test-only rate limit per direction (``up --link-mbit N``,
``link.py``) makes the stream as slow as a real network link.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import struct
import termios
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from tests.cluster.node import logs, sandbox
from tests.cluster.node.kubelet import Kubelet, since_time
from tests.cluster.node.link import Link
from tests.cluster.node.pod_worker import PodWorker

Json = dict[str, Any]
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_CHUNK = 64 * 1024


def exit_status(command: Sequence[str], code: int) -> Json:
    """The Status a real server sends on channel 3 for an exec that ended with ``code``."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    cmd = "[" + " ".join(command) + "]"  # Go's %v of a []string
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command {cmd}, "
                       f"exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _bad_request(message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": "BadRequest", "code": 400}, status=400)


class NodeStreams:
    """Serves pod subresources for the kubelets returned by ``kubelet_for(node_name)``."""

    def __init__(self, kubelet_for: Callable[[str], Kubelet | None],
                 protocols: Sequence[str] = (V5, V4), link_mbit: float | None = None) -> None:
        self.kubelet_for = kubelet_for
        self.protocols = list(protocols)
        self.link_mbit = link_mbit

    def _worker(self, pod: Json) -> PodWorker | None:
        kubelet = self.kubelet_for((pod.get("spec") or {}).get("nodeName") or "")
        return kubelet.worker_for(pod) if kubelet is not None else None

    # ------------------------------------------------------------------------------------------ exec
    async def exec(self, request: web.Request, pod: Json, container: str, command: list[str],
                   stdin: bool, stdout: bool, stderr: bool, tty: bool) -> web.StreamResponse:
        worker = self._worker(pod)
        record = worker.record(container) if worker is not None else None
        if record is None or record.process is None or not record.running:
            # kubelet GetExec → streaming.WriteError: 500 with the bare error text; clients show it
            # as `unable to upgrade connection: container not found ("x")`.
            return web.Response(status=500, text=f'container not found ("{container}")')
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _bad_request("Upgrade request required")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                   if p.strip()]
        chosen = next((p for p in offered if p in self.protocols), None)
        if chosen is None:
            return web.Response(status=400, text=(
                f"requested protocol(s) are not supported: [{' '.join(offered)}]; "
                f"supports [{' '.join(self.protocols)}]"))
        if tty:
            stderr = False  # a terminal merges stderr into stdout, as the real server does
        ws = web.WebSocketResponse(protocols=[chosen], max_msg_size=0, autoping=True)
        await ws.prepare(request)
        first = STDOUT if stdout else STDERR if stderr else STATUS
        await ws.send_bytes(bytes([first]))
        process = record.process
        code = await _run_exec(ws, chosen, process, command, stdin, stdout, stderr, tty, Link(self.link_mbit))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(bytes([STATUS]) + json.dumps(exit_status(command, code),
                                                              separators=(",", ":")).encode())
        await ws.close()
        return ws

    # ---------------------------------------------------------------------------------------- attach
    async def attach(self, request: web.Request, pod: Json, container: str, stdin: bool, stdout: bool,
                     stderr: bool, tty: bool) -> web.StreamResponse:
        return _bad_request("attach is not supported by the loopback cluster's nodes")

    async def portforward(self, request: web.Request, pod: Json, ports: list[int]) -> web.StreamResponse:
        return _bad_request("port-forward is not supported by the loopback cluster's nodes")

    # ------------------------------------------------------------------------------------------- log
    async def log(self, request: web.Request, pod: Json, container: str, follow: bool,
                  tail_lines: int | None, since_seconds: int | None, timestamps: bool,
                  previous: bool) -> web.StreamResponse:
        name = pod["metadata"]["name"]
        worker = self._worker(pod)
        record = worker.record(container) if worker is not None else None
        if worker is None or record is None:
            return _bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                                "ContainerCreating")
        path = worker.log_path(container, previous=previous)
        if previous and not path.exists():
            return _bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        if not path.exists():
            reason = (record.state.get("waiting") or {}).get("reason", "ContainerCreating")
            return _bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        lines = logs.read(path, follow=follow and not previous, tail_lines=tail_lines,
                          since=since_time(since_seconds), timestamps=timestamps,
                          still_running=lambda: record.process is not None)
        async for chunk in lines:
            await response.write(chunk)
        await response.write_eof()
        return response


async def _run_exec(ws: web.WebSocketResponse, protocol: str, container: sandbox.ContainerProcess,
                    command: list[str], stdin: bool, stdout: bool, stderr: bool, tty: bool,
                    link: Link) -> int:
    loop = asyncio.get_running_loop()
    args = sandbox.exec_args(container, command, tty=tty)
    env = sandbox.exec_env(container)
    master = -1
    if tty:
        master, slave = _container_pty(container.pid)
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        out_reader = asyncio.StreamReader(limit=_CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(out_reader),
                                     os.fdopen(os.dup(master), "rb", 0))
        readers = [(STDOUT, out_reader)]
    else:
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if stderr else asyncio.subprocess.DEVNULL, limit=_CHUNK)
        readers = [(ch, r) for ch, r in ((STDOUT, proc.stdout), (STDERR, proc.stderr)) if r is not None]

    async def pump_out(channel: int, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await reader.read(_CHUNK)
            except OSError:  # EIO on a pty once the process side is closed
                return
            if not data:
                return
            await link.send(len(data) + 1)
            await ws.send_bytes(bytes([channel]) + data)  # awaits the socket's drain: back-pressure

    async def pump_in() -> None:
        async for msg in ws:
            # Text frames count as well (wsstream reads both): the Python client sends str data as text.
            if msg.type == WSMsgType.TEXT:
                raw = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                raw = msg.data
            else:
                continue
            if not raw:
                continue
            await link.receive(len(raw))  # reading no further meanwhile: the client's writes back up
            channel, data = raw[0], raw[1:]
            if channel == STDIN and stdin:
                if tty:
                    await loop.run_in_executor(None, _write_all, master, data)
                elif proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            elif channel == CLOSE and protocol == V5 and data[:1] == bytes([STDIN]):
                if tty:
                    await loop.run_in_executor(None, _write_all, master, b"\x04")
                elif proc.stdin is not None:
                    proc.stdin.close()
            elif channel == RESIZE and tty:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    size = json.loads(data)
                    fcntl.ioctl(master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
        # The client went away: end the command, as the real server does when the stream breaks.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    inbound = asyncio.create_task(pump_in())
    try:
        outputs = [asyncio.create_task(pump_out(ch, r)) for ch, r in readers]
        code = await proc.wait()
        if tty:
            # The pty master reports EIO once the last slave holder exits; give it a moment to drain.
            await asyncio.wait(outputs, timeout=2)
        else:
            await asyncio.gather(*outputs, return_exceptions=True)
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inbound
        if master >= 0:
            os.close(master)
    return code


_TIOCGPTN, _TIOCSPTLCK = 0x80045430, 0x40045431  # <asm-generic/ioctls.h>


def _container_pty(pid: int) -> tuple[int, int]:
    """A pseudo-terminal from the container's own devpts (bwrap mounts a new instance on /dev/pts), as a
    runtime allocates the exec console inside the container: there ``tty`` names it /dev/pts/N."""
    root = f"/proc/{pid}/root"
    try:
        master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))
        slave = os.open(f"{root}/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, slave


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
