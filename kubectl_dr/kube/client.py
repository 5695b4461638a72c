"""The connection to the API server (`Kube`) over our own transport, and the translation of its failures.

Everything that can go wrong talking to the API server ends up as one of the errors in
`kubectl_dr.errors`, worded as kubectl words it, so commands never handle client exceptions themselves.
The `kubernetes` package is not imported here (see `transport`): it cost a third of a second per command.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from kubectl_dr.errors import ApiError, DrError, ServerTimeout, ServerUnreachable, UnauthorizedError
from kubectl_dr.kube import trace
from kubectl_dr.kube.kubeconfig import ResolvedConfig
from kubectl_dr.kube.transport import HandshakeTimeout, Transport


class HttpFailure(Exception):
    """An answer outside 2xx: its status, reason phrase and body, for `api_error`."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = body


T = TypeVar("T")


@dataclass
class Kube:
    """One connection to the cluster: the API client plus the settings it was built from."""

    transport: Transport
    resolved: ResolvedConfig
    request_timeout: float | None

    @property
    def namespace(self) -> str:
        return self.resolved.namespace

    @property
    def host(self) -> str:
        parsed = urlparse(self.resolved.server)
        return parsed.netloc or self.resolved.server

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call with JSON in and out: the domain layers work on plain dicts, never on models.

        Plain dicts keep the objects exactly as the server sent them (no field renaming, nothing dropped
        for fields the generated models do not know), which is what we record and restore.
        """
        pairs = list(query.items()) if isinstance(query, dict) else list(query or [])
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        trace.pod_body(body)
        payload = None if body is None else json.dumps(body).encode()
        data = self._send(method, self.transport.url(path, pairs), headers, payload)
        return json.loads(data) if data else None

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> bytes:
        """One request on the wire: errors translated, and traced at -v6 (verb, URL, status, time)."""
        started, status = time.monotonic(), None
        try:
            with translate_errors(self.host):
                # Credentials first: an exec plugin may run here, and its failure is the user's answer.
                headers = {**headers, **self.transport.auth_headers()}
                response = self.transport.send(method, url, headers, body, self.request_timeout)
                status = response.status
                data: bytes = response.data
                if response.status == 401:
                    self.transport.refused()
                if not 200 <= response.status <= 299:
                    raise HttpFailure(response.status, str(response.reason or ""), data)
            return data
        finally:
            trace.request(method, url, status, started)

    def text(self, path: str, **query: Any) -> str:
        """GET a plain-text answer (pod logs); errors translated like every other call."""
        url = self.transport.url(path, list(query.items()))
        return self._send("GET", url, {"Accept": "*/*"}, None).decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def exists(self, path: str) -> bool:
        try:
            self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def server_version(self) -> dict[str, Any]:
        """GET /version as kubectl does it (gitVersion, platform, …)."""
        data: dict[str, Any] = self.get("/version")
        return data

    def close(self) -> None:
        self.transport.close()


@dataclass
class CachedReads(Kube):
    """The same connection, answering a GET it has answered before (same path and query) from a copy of
    that answer. For read-only overviews that would ask the same lists once per item: `pvc list` needs a
    namespace's pods and workloads for every claim. Anything but a GET goes to the server."""

    answers: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, kube: Kube) -> CachedReads:
        return cls(kube.transport, kube.resolved, kube.request_timeout)

    def request(self, method: str, path: str, *, query: dict[str, Any] | list[tuple[str, Any]] | None = None,
                body: Any = None, content_type: str = "application/json") -> Any:
        if method != "GET" or body is not None:
            return super().request(method, path, query=query, body=body, content_type=content_type)
        key = (path, json.dumps(query, sort_keys=True, default=str))
        if key not in self.answers:
            self.answers[key] = super().request(method, path, query=query)
        # A copy: callers annotate what they get (a list item's kind), and must not see each other's notes.
        return copy.deepcopy(self.answers[key])


def connect(resolved: ResolvedConfig, request_timeout: float | None = None) -> Kube:
    """A connection for the resolved kubeconfig; credentials (token file, plugin) are checked here, once."""
    return Kube(Transport(resolved), resolved, request_timeout)


def status_from_body(body: str | bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "Status" else None


def api_error(exc: HttpFailure) -> ApiError:
    status = status_from_body(exc.body)
    code = int(exc.status or 0)
    if code == 401:
        return UnauthorizedError()
    if status is not None:
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or exc.reason or "")
        return ApiError(code, reason or _reason_for(code), message)
    text = exc.body.decode(errors="replace")
    return ApiError(code, _reason_for(code), _generic_message(code, text.strip()))


def _generic_message(code: int, body: str) -> str:
    """client-go's sentences for an error answer that carries no Status object (what kubectl prints)."""
    messages = {
        400: "the server rejected our request for an unknown reason",
        404: "the server could not find the requested resource",
        405: "the server does not allow this method on the requested resource",
        409: "the server reported a conflict",
        422: "the server rejected our request due to an error in our request",
        429: "the server has received too many requests and has asked us to try again later",
        503: "the server is currently unable to handle the request",
        504: "the server was unable to return a response in the time allotted, but may still be processing the request",
    }
    if code in messages:
        return messages[code]
    if code >= 500:
        return f"an error on the server ({body or 'unknown'!r}) has prevented the request from succeeding"
    return body or f"unknown (status {code})"


def _reason_for(code: int) -> str:
    return {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(code, "Unknown")


def _unreachable(host: str, exc: BaseException) -> DrError:
    proxy_error = exc if isinstance(exc, ProxyError) else getattr(exc, "reason", None)
    if isinstance(proxy_error, ProxyError):
        # The proxy, not the API server, failed us: kubectl says "proxyconnect tcp: …". urllib3's text names the
        # proxy by neither URL nor credentials, only what went wrong.
        original = getattr(proxy_error, "original_error", None)
        return DrError(f"unable to connect to the server {host}: proxyconnect: {original or proxy_error}",
                       hint="Check proxy-url in your kubeconfig, or HTTPS_PROXY / NO_PROXY.")
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(cause):
            return ServerUnreachable(host)
        if isinstance(cause, ReadTimeoutError):
            return ServerTimeout(host)
        if isinstance(cause, ConnectTimeoutError) and not isinstance(cause, NewConnectionError):
            # kubectl: "dial tcp HOST: i/o timeout", or "net/http: TLS handshake timeout" for a port that took the
            # connection and never spoke TLS: nothing answered, so no --request-timeout would help.
            what = str(cause) if isinstance(cause, HandshakeTimeout) else "i/o timeout"
            return DrError(f"unable to connect to the server {host}: {what}",
                           hint="Check the server address in your kubeconfig and that this machine reaches it "
                                "(VPN, firewall, proxy).")
        reason = getattr(cause, "reason", None)  # urllib3 keeps the socket error here (or a plain text)
        cause = cause.__cause__ or cause.__context__ or (reason if isinstance(reason, BaseException) else None)
        if cause is exc:
            break
    text = str(exc)
    mismatch = re.search(r"(?:Hostname|IP address) mismatch, certificate is not valid for '([^']*)'", text)
    if mismatch:
        return DrError(f"unable to connect to the server {host}: x509: certificate is not valid for "
                       f"{mismatch.group(1)}", hint="Check the server address and tls-server-name in your kubeconfig.")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return DrError(f"unable to connect to the server {host}: x509: certificate verification failed",
                       hint="Check certificate-authority in your kubeconfig.")
    if "Name or service not known" in text or "nodename nor servname" in text:
        return DrError(f"unable to connect to the server {host}: no such host")
    return DrError(f"unable to connect to the server {host}: {text}")


@contextmanager
def translate_errors(host: str) -> Iterator[None]:
    try:
        yield
    except HttpFailure as exc:
        raise api_error(exc) from None
    except (MaxRetryError, NewConnectionError, ProtocolError, ConnectionError) as exc:
        raise _unreachable(host, exc) from None
    except Urllib3HTTPError as exc:
        raise _unreachable(host, exc) from None
