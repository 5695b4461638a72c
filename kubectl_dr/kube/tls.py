"""The TLS side of a connection to the API server, built from a kubeconfig cluster entry with client-go's rules.

- `certificate-authority-data` wins over `certificate-authority` (client-go reads data before the file); with
  neither, the certifi bundle, as the `kubernetes` package verified before this module existed.
- Whenever the server certificate is verified, its name is verified too: against `tls-server-name` when given
  (which is also the SNI name, as in Go's `tls.Config.ServerName`), else against the server URL's host.
- `insecure-skip-tls-verify` turns both off; together with a CA it is refused with client-go's message,
  since the user cannot have meant both.
- Client certificates given as data never stay on disk: they pass through a private temporary directory
  (0700, files 0600) that is removed as soon as OpenSSL has read them (`load_cert_chain` reads only paths).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi

from kubectl_dr.errors import ConfigError


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key: PEM bytes, whatever the kubeconfig gave (paths are read once)."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class ServerTrust:
    """How the server is checked: CA bundle (PEM), or no check at all; and the name to expect."""

    ca_pem: str | None
    insecure: bool
    server_name: str | None  # tls-server-name: SNI and the name checked in the certificate


def _decode(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"invalid configuration: {what} is not valid base64") from None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        # clientcmd's words: "unable to read client-cert X for USER due to open X: no such file or directory"
        raise ConfigError(f"unable to read {what} {path} due to open {path}: {reason}") from None


def insecure_flag(cluster: dict[str, Any]) -> bool:
    """`insecure-skip-tls-verify` as a YAML boolean only. A quoted "false" is a non-empty string: taken for its
    truth it would switch every check off; client-go refuses a file that gives anything but a boolean."""
    value = cluster.get("insecure-skip-tls-verify")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"invalid configuration: insecure-skip-tls-verify must be true or false (unquoted), "
                          f"not {value!r}")
    return value


def server_trust(cluster: dict[str, Any]) -> ServerTrust:
    insecure = insecure_flag(cluster)
    ca: bytes | None = None
    if cluster.get("certificate-authority-data"):
        ca = _decode(cluster["certificate-authority-data"], "certificate-authority-data")
    elif cluster.get("certificate-authority"):
        ca = _read(str(cluster["certificate-authority"]), "certificate-authority")
    if insecure and ca:
        raise ConfigError("specifying a root certificates file with the insecure flag is not allowed")
    return ServerTrust(ca.decode(errors="replace") if ca else None, insecure,
                       str(cluster.get("tls-server-name") or "") or None)


def client_cert(user: dict[str, Any], user_name: str = "the user") -> ClientCert | None:
    """The user's certificate pair from `client-certificate[-data]` and `client-key[-data]` (data wins)."""
    cert = key = None
    if user.get("client-certificate-data"):
        cert = _decode(user["client-certificate-data"], "client-certificate-data")
    elif user.get("client-certificate"):
        cert = _read(str(user["client-certificate"]), "client-certificate")
    if user.get("client-key-data"):
        key = _decode(user["client-key-data"], "client-key-data")
    elif user.get("client-key"):
        key = _read(str(user["client-key"]), "client-key")
    if cert is None and key is None:
        return None
    # clientcmd's validation sentences for a half-given pair
    if key is None:
        raise ConfigError(f"client-key-data or client-key must be specified for {user_name} to use the "
                          "clientCert authentication method.")
    if cert is None:
        raise ConfigError(f"client-cert-data or client-cert must be specified for {user_name} to use the "
                          "clientCert authentication method.")
    return ClientCert(cert, key)


def context_for(trust: ServerTrust, cert: ClientCert | None) -> ssl.SSLContext:
    """A fresh client context: TLS ≥ 1.2 (client-go's floor), CA and name checks unless insecure."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname=True, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif trust.ca_pem:
        try:
            context.load_verify_locations(cadata=trust.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"unable to load root certificates: {exc}") from None
    else:
        context.load_verify_locations(cafile=certifi.where())
    if cert is not None:
        _load_pair(context, cert)
    return context


def _load_pair(context: ssl.SSLContext, cert: ClientCert) -> None:
    try:
        _load_pair_through_files(context, cert)
    except OSError as exc:  # a full or read-only TMPDIR: say so, not "cannot connect"
        if isinstance(exc, ssl.SSLError):
            raise
        raise ConfigError(f"cannot hand the client certificate to OpenSSL through a private temporary file in "
                          f"{tempfile.gettempdir()}: {exc.strerror or exc}",
                          hint="Free space there, or point TMPDIR at a writable directory.") from None


def _load_pair_through_files(context: ssl.SSLContext, cert: ClientCert) -> None:
    with tempfile.TemporaryDirectory(prefix="kubectl-dr-tls-") as private:  # 0700: only we can look in
        cert_path, key_path = os.path.join(private, "client.crt"), os.path.join(private, "client.key")
        for path, data in ((cert_path, cert.cert), (key_path, cert.key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        try:
            context.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"tls: failed to find or load the client certificate and key: {exc}") from None
