"""Our own exec over WebSocket, fit for moving gigabytes.

The stock `kubernetes.stream` client buffers every byte it receives and re-scans its buffer on each read
(quadratic: under 1 MB/s on 200 MB). Here websocket-client only performs the handshake; afterwards
frames are read straight off the socket and handed to a sink, stdin goes out in frames of at most
1 MiB masked by a compiled routine, every TLS call runs alone (`_Wire`), and the command's fate is read
from the status channel — a missing or unparsable status counts as failure, never as success.

Channels of the remote command protocol: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; with
`v5.channel.k8s.io` (API servers ≥ 1.30) a frame on channel 255 closes a stream, which is how stdin
gets its end-of-file. With `v4.channel.k8s.io` stdin cannot be closed, so callers that send data bound it
in the command itself (`head -c N`): see `bounded_input`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

from websocket import ABNF, WebSocket, WebSocketConnectionClosedException, WebSocketException

from kubectl_dr.errors import ConfigError, DrError, VerificationError
from kubectl_dr.kube import trace
from kubectl_dr.kube.client import Kube, translate_errors
from kubectl_dr.kube.transport import Transport, redacted

_c_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask as _compiled_mask

    _c_mask = _compiled_mask
except ImportError:  # a platform without the compiled routine: websocket-client's own masking, correct but slow
    _c_mask = None

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_CHUNK = 1 << 20
STDERR_KEEP = 64 * 1024


@dataclass
class ExecResult:
    """How the remote command ended, from the status channel."""

    exit_code: int | None
    status: dict[str, Any] | None
    stderr: bytes
    protocol: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.status is None:
            return "the API server closed the stream without reporting the command's exit status"
        if self.exit_code is not None and self.exit_code != 0:
            return f"the command exited with code {self.exit_code}"
        return str(self.status.get("message") or "the command failed")

    def check(self, what: str) -> None:
        """Raise unless the command reported success: a transfer is only good with a clean exit."""
        if self.ok:
            return
        tail = self.stderr.decode(errors="replace").strip()
        detail = f"\n{tail[-2000:]}" if tail else ""
        raise VerificationError(f"{what} failed: {self.describe()}{detail}")


def parse_status(payload: bytes) -> tuple[int | None, dict[str, Any] | None]:
    """Exit code from a channel-3 Status: 0 for Success, N for NonZeroExitCode, None if unreadable."""
    try:
        status = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(status, dict):
        return None, None
    if status.get("status") == "Success":
        return 0, status
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message")), status
                except (TypeError, ValueError):
                    break
    # A Failure without an exit code (container gone, exec refused): not a success, no code to report.
    return -1, status


def bounded_input(command: list[str], size: int) -> list[str]:
    """Wrap a command so it reads exactly `size` bytes of stdin, whatever the protocol can signal.

    On v4 there is no way to close stdin; `head -c` ends the input after the announced size. We use it
    on v5 too, so both protocols run the same command (and a short stream fails the same way).
    """
    inner = " ".join(shlex.quote(part) for part in command)
    return ["sh", "-c", f"head -c {int(size)} | {{ {inner}; }}"]


class _Wire:
    """The exec connection's socket after the handshake: every TLS call made here, one at a time.

    One OpenSSL connection must not be used by two threads at once, and exec reads in one thread while
    another writes stdin: with websocket-client's blocking reads and writes side by side, a full-duplex
    stream broke about one run in six ("the API server closed the connection"). So the socket is made
    non-blocking, each read or write runs under `io` and returns at once, and the waiting happens in
    select(), outside the lock, where it holds up nobody. `frames` keeps a frame's head and body
    together on the wire when several threads write.
    """

    def __init__(self, sock: Any, idle: float | None) -> None:
        self.sock = sock
        self.idle = idle
        self.io = threading.Lock()
        self.frames = threading.Lock()
        sock.settimeout(0.0)

    def recv_into(self, buffer: bytearray) -> int:
        deadline = None if self.idle is None else time.monotonic() + self.idle
        while True:
            with self.io:
                try:
                    return int(self.sock.recv_into(buffer))
                except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                    wait_write = False
                except ssl.SSLWantWriteError:
                    wait_write = True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("no data from the API server")
            if wait_write:
                select.select([], [self.sock], [], remaining)
            else:
                select.select([self.sock], [], [], remaining)

    def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self.io:
                try:
                    view = view[self.sock.send(view) :]
                    continue
                except (ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                    wait_read = False
                except ssl.SSLWantReadError:
                    wait_read = True
            # The same bytes are offered again (OpenSSL wants the retry to repeat the write).
            if wait_read:
                select.select([self.sock], [], [], 1.0)
            else:
                select.select([], [self.sock], [], 1.0)

    def send_frame(self, head: bytes, body: bytes = b"", *, wait: bool = True) -> bool:
        """Write one frame; `wait=False` gives up (False) if another thread is writing a frame."""
        if not self.frames.acquire(blocking=wait):
            return False
        try:
            self.send_all(head)
            if body:
                self.send_all(body)
            return True
        finally:
            self.frames.release()


class _FrameReader:
    """Server frames straight off the socket through one buffer.

    websocket-client makes three or more socket calls per frame (header, length, payload in 16 KiB
    pieces), each through several Python layers: about 1 CPU-s per GiB of a backup. Here every read
    takes what the socket has (one TLS record, up to 16 KiB) into a buffer and frames are cut from it.
    """

    def __init__(self, wire: _Wire, pong: Callable[[bytes], None]) -> None:
        self.wire = wire
        self.pong = pong
        self.buf = bytearray()  # deleting from the front of a bytearray is cheap (CPython keeps an offset)
        self.scratch = bytearray(1 << 18)

    def _need(self, size: int) -> None:
        while len(self.buf) < size:
            got = self.wire.recv_into(self.scratch)
            if not got:
                raise WebSocketConnectionClosedException("the API server closed the connection")
            with memoryview(self.scratch) as view:
                self.buf += view[:got]

    def _frame(self) -> tuple[bool, int, bytes]:
        self._need(2)
        first, second = self.buf[0], self.buf[1]
        size, head = second & 0x7F, 2
        if size == 126:
            self._need(4)
            size, head = int.from_bytes(self.buf[2:4], "big"), 4
        elif size == 127:
            self._need(10)
            size, head = int.from_bytes(self.buf[2:10], "big"), 10
        key = b""
        if second & 0x80:  # servers must not mask; accept it anyway
            self._need(head + 4)
            key, head = bytes(self.buf[head : head + 4]), head + 4
        self._need(head + size)
        with memoryview(self.buf) as view:
            payload = bytes(view[head : head + size])
        del self.buf[: head + size]
        if key:
            payload = ABNF.mask(key, payload)
        return bool(first & 0x80), first & 0x0F, payload

    def message(self) -> tuple[int, bytes]:
        """The next whole message (continuation frames joined), or a control frame between them."""
        fin, opcode, payload = self._frame()
        if fin or opcode >= 0x8:
            return opcode, payload
        parts = [payload]
        while True:
            fin, more, payload = self._frame()
            if more >= 0x8:  # control frames may arrive between the fragments of a message
                if more == ABNF.OPCODE_CLOSE:
                    return more, payload
                if more == ABNF.OPCODE_PING:
                    self.pong(payload)
                continue
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)


def client_frame(data: bytes | memoryview, *, channel: int | None = STDIN,
                 opcode: int = ABNF.OPCODE_BINARY) -> tuple[bytes, bytes]:
    """A final, masked frame: `channel` (if any) then `data`, as (head, body) to write in turn.

    Every frame a client sends must be masked with a fresh random key (RFC 6455 section 5.3).
    websocket-client masks in pure Python, about 4 CPU-seconds per GiB, which made our own process the
    largest cost of a restore; websockets' C routine does the same XOR at well over 10 GB/s. The channel
    byte leads the payload, so the data itself is masked with the key rotated by one byte: no copy of
    the data is made to put the channel byte in front, and no copy to join head and body (each fresh
    1 MiB buffer costs page faults; together they cost more than the masking).
    """
    lead = b"" if channel is None else bytes([channel])
    size = len(data) + len(lead)
    first = 0x80 | opcode  # FIN + opcode
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    key = os.urandom(4)
    if _c_mask is None or len(data) < 64:
        return header + key + ABNF.mask(key, lead + bytes(data)), b""
    shift = len(lead)
    return header + key + bytes(b ^ key[i] for i, b in enumerate(lead)), _c_mask(data, key[shift:] + key[:shift])


@dataclass
class Timeouts:
    connect: float = 30.0
    # No frame at all for this long means the connection is dead (the remote side sends nothing while
    # it waits for our stdin, so writers use `None`: their own progress shows the link is alive).
    idle: float | None = 300.0


@dataclass
class ExecStream:
    """One exec session. Use `run()`, or `send()`/`close_stdin()`/`pump()` for finer control."""

    ws: WebSocket  # only its handshake is used: afterwards every byte goes through `wire`
    protocol: str
    target: str
    wire: _Wire
    stderr_tail: deque[bytes] = field(default_factory=deque)
    _stderr_size: int = 0
    _status: bytes | None = None
    _closed: bool = False
    _close_sent: bool = False
    _released: bool = False
    _pump_thread: threading.Thread | None = None

    @property
    def can_close_stdin(self) -> bool:
        return self.protocol == V5

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), MAX_CHUNK):
            self.wire.send_frame(*client_frame(view[start : start + MAX_CHUNK]))

    def send_channel(self, channel: int, data: bytes) -> None:
        """One message on another channel (e.g. RESIZE for a terminal)."""
        self.wire.send_frame(*client_frame(data, channel=channel))

    def close_stdin(self) -> None:
        if self.can_close_stdin:
            self.send_channel(CLOSE, bytes([STDIN]))

    def _pong(self, data: bytes) -> None:
        # Waits for a frame being written (at most 1 MiB): servers read while they write, so that frame
        # gets out, and a server that pings may close a connection whose pongs never come.
        self.wire.send_frame(*client_frame(data, channel=None, opcode=ABNF.OPCODE_PONG))

    def _send_close(self, *, wait: bool) -> None:
        if not self._close_sent:
            with contextlib.suppress(OSError, ValueError):
                head, body = client_frame(struct.pack("!H", 1000), channel=None, opcode=ABNF.OPCODE_CLOSE)
                self._close_sent = self.wire.send_frame(head, body, wait=wait)

    def _keep_stderr(self, data: bytes) -> None:
        self.stderr_tail.append(data)
        self._stderr_size += len(data)
        while self._stderr_size > STDERR_KEEP and len(self.stderr_tail) > 1:
            self._stderr_size -= len(self.stderr_tail.popleft())

    def pump(
        self,
        stdout: Callable[[bytes], None] | None = None,
        stderr: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """Read frames until the server closes the stream; return how the command ended."""
        frames = _FrameReader(self.wire, self._pong)
        self._pump_thread = threading.current_thread()
        try:
            while True:
                opcode, data = frames.message()
                if opcode == ABNF.OPCODE_CLOSE:
                    self._send_close(wait=False)  # answer it, as RFC 6455 asks
                    break
                if opcode == ABNF.OPCODE_PING:
                    self._pong(data)
                    continue
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not data:
                    continue
                channel, payload = data[0], data[1:]
                if not payload:
                    continue
                if channel == STDOUT:
                    if stdout is not None:
                        stdout(payload)
                elif channel == STDERR:
                    self._keep_stderr(payload)
                    if stderr is not None:
                        stderr(payload)
                elif channel == STATUS:
                    self._status = (self._status or b"") + payload
        except TimeoutError:  # _Wire: nothing for `idle` seconds
            raise DrError(f"exec in {self.target}: no data for too long; the connection looks dead") from None
        except (WebSocketException, OSError) as exc:
            if self._status is None:
                raise DrError(f"exec in {self.target}: the connection broke: {exc}") from None
        finally:
            self._pump_thread = None
            self.close()
        code, status = parse_status(self._status) if self._status is not None else (None, None)
        return ExecResult(code, status, b"".join(self.stderr_tail), self.protocol)

    def run(
        self,
        stdin: Iterable[bytes | memoryview] | None = None,
        stdout: Callable[[bytes], None] | None = None,
        stderr: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """Feed `stdin` (then close it) while a reader thread drains the output; return the result."""
        if stdin is None:
            return self.pump(stdout, stderr)
        outcome: list[ExecResult] = []
        failure: list[BaseException] = []

        def reader() -> None:
            try:
                outcome.append(self.pump(stdout, stderr))
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=reader, name=f"exec-reader {self.target}", daemon=True)
        thread.start()
        try:
            for chunk in stdin:
                if not thread.is_alive():
                    break  # the command ended early (error): its status says why
                if chunk:
                    self.send(chunk)
            if thread.is_alive():
                self.close_stdin()
        except (WebSocketException, OSError):
            pass  # the reader reports what happened to the connection
        except BaseException:
            self.close()
            thread.join(5)
            raise
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        """Say goodbye and close the socket. From another thread while a reader is pumping (an
        interruption), only shut the socket down: the reader then sees the end and closes it."""
        if not self._closed:
            self._closed = True
            self._send_close(wait=False)
            with contextlib.suppress(OSError, ValueError):
                self.wire.sock.shutdown(socket.SHUT_RDWR)
        pumping = self._pump_thread is not None and self._pump_thread is not threading.current_thread()
        if not pumping and not self._released:
            self._released = True
            with contextlib.suppress(WebSocketException, OSError):
                self.ws.shutdown()


def _direct_socket(transport: Transport, url: str, timeout: float | None) -> socket.socket:
    """The stream's connection when no proxy is to be used: opened here, not by websocket-client, which would
    otherwise look for a proxy in the environment with rules of its own (no loopback exemption, NO_PROXY read
    differently) and disagree with the decision the requests follow. TLS with the requests' own context: same
    CA, client certificate, and name check (against tls-server-name when given, as for requests)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if transport.secure else 80)
    sock = socket.create_connection((parsed.hostname or "", port), timeout=timeout)
    if not transport.secure:
        return sock
    try:
        wrapped: socket.socket = transport.ssl_context().wrap_socket(
            sock, server_hostname=transport.server_hostname or parsed.hostname)
    except BaseException:
        sock.close()
        raise
    return wrapped


def _proxy_options(proxy_url: str) -> dict[str, Any]:
    """websocket-client's options for the proxy the transport chose. Its "http" proxy speaks plain TCP to the
    proxy: an https:// proxy would get the CONNECT line and its Proxy-Authorization in clear, so it is refused."""
    proxy = urlparse(proxy_url)
    scheme = proxy.scheme.lower()
    if scheme == "https":
        raise ConfigError(
            f"proxy-url {redacted(proxy_url)}: an https:// proxy is not supported "
            "for exec streams (its credentials would cross in clear); use an http:// proxy: the API traffic inside "
            "its tunnel is TLS either way")
    kind = scheme if scheme.startswith("socks") else "http"
    options: dict[str, Any] = {"http_proxy_host": proxy.hostname, "proxy_type": kind,
                               "http_proxy_port": proxy.port or (1080 if kind.startswith("socks") else 80)}
    if proxy.username:
        options["http_proxy_auth"] = (unquote(proxy.username), unquote(proxy.password or ""))
    return options


def _connect(transport: Transport, url: str, headers: dict[str, str] | None, protocols: list[str],
             timeouts: Timeouts) -> WebSocket:
    parsed = urlparse(url)
    scheme = {"https": "wss", "http": "ws"}.get(parsed.scheme, parsed.scheme)
    ws_url = urlunparse((scheme, *parsed[1:]))
    header = []
    if headers and "authorization" in headers:
        header.append(f"authorization: {headers['authorization']}")
    # `subprotocols` (not a raw header) so the client checks and records the server's choice. No redirects:
    # websocket-client would follow one to any host, ws:// too, with the Authorization header.
    options: dict[str, Any] = {"header": header, "subprotocols": protocols, "timeout": timeouts.connect,
                               "redirect_limit": 0}
    sslopt: dict[str, Any] = {}
    if transport.proxy:
        options.update(_proxy_options(transport.proxy))
        if transport.secure:
            sslopt = {"context": transport.ssl_context()}
            if transport.server_hostname:
                sslopt["server_hostname"] = transport.server_hostname  # SNI and the name checked, as for requests
    else:
        options["socket"] = _direct_socket(transport, url, timeouts.connect)
    # enable_multithread: run() writes stdin from one thread while another reads.
    ws = WebSocket(sslopt=sslopt, skip_utf8_validation=True, enable_multithread=True)
    try:
        ws.connect(ws_url, **options)
    except WebSocketException as exc:
        if "Redirect limit exhausted" in str(exc):
            raise DrError("the API server answered the exec request with a redirect, which kubectl dr does not "
                          "follow (your credentials would go along to wherever it points)",
                          hint="Check the server address in your kubeconfig.") from None
        raise
    return ws


def open_exec(
    kube: Kube,
    namespace: str,
    pod: str,
    command: list[str],
    *,
    container: str | None = None,
    stdin: bool = False,
    tty: bool = False,
    protocols: list[str] | None = None,
    timeouts: Timeouts | None = None,
) -> ExecStream:
    """Start `command` in the pod and return the open stream (the command is already running).

    The URL, the credentials and the TLS context come from the connection's transport, so every
    kubeconfig auth method works here as for requests.
    """
    timeouts = timeouts or Timeouts()
    offered = protocols or [V5, V4]
    target = f"pod {namespace}/{pod}"
    query: list[tuple[str, Any]] = [("command", part) for part in command]
    query += [("stdin", stdin), ("stdout", True), ("stderr", not tty), ("tty", tty)]
    if container:
        query.append(("container", container))
    url = kube.transport.url(f"/api/v1/namespaces/{namespace}/pods/{pod}/exec", query)
    trace.script(f"exec in {target}" + (f" container {container}" if container else ""), command)
    started, status = time.monotonic(), None
    try:
        with translate_errors(kube.host):
            headers = kube.transport.auth_headers()
            ws = _connect(kube.transport, url, {k.lower(): v for k, v in headers.items()}, offered, timeouts)
        status = ws.getstatus()
    except WebSocketException as exc:
        status = getattr(exc, "status_code", None)
        if status == 401:
            kube.transport.refused()
        raise _upgrade_error(exc, target) from None
    except OSError as exc:  # includes socket timeouts
        raise DrError(f"exec in {target}: cannot connect to the API server: {exc}") from None
    finally:
        trace.request("GET", url, status, started)
    protocol = ws.getsubprotocol() or ""
    if protocol not in (V5, V4):
        ws.close()
        raise DrError(
            f"exec in {target}: the API server did not agree on a stream protocol (offered {', '.join(offered)})",
            hint="kubectl dr needs an API server that supports v4.channel.k8s.io exec (Kubernetes ≥ 1.4).",
        )
    return ExecStream(ws, protocol, target, _Wire(ws.sock, timeouts.idle))


def _upgrade_error(exc: WebSocketException, target: str) -> DrError:
    """Turn a refused upgrade into the API server's own message (it sends a Status body)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "resp_body", None) or b""
    message = ""
    reason = ""
    try:
        data = json.loads(body)
        message, reason = str(data.get("message", "")), str(data.get("reason", ""))
    except (ValueError, TypeError, AttributeError):
        message = body.decode(errors="replace").strip() if isinstance(body, bytes) else str(body)
    from kubectl_dr.errors import ApiError, UnauthorizedError

    if status == 401:
        return UnauthorizedError()
    if status and (message or reason):
        return ApiError(int(status), reason or "BadRequest", message or str(exc))
    return DrError(f"exec in {target}: the API server refused the stream: {exc}")


