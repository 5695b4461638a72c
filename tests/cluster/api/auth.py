"""Authentication: verified client certificates (user = CN, groups = O) and static bearer tokens.

The tokens file uses kube-apiserver's ``--token-auth-file`` CSV format: ``token,user,uid,"group1,group2"``.
Every authenticated user also gets ``system:authenticated``, as a real server adds it.

As in kube-apiserver (``union.NewFailOnError(union.New(x509, token), anonymous)``):
- the client certificate and the bearer token are tried in that order; the first that authenticates wins;
- when none does and one of them failed (a certificate that does not verify against the client CA, an
  unknown bearer token), the request is refused with 401 — on every path, /version and /healthz too;
- only a request that presents no credentials at all is ``system:anonymous``.

A real server asks for a client certificate without verifying it in the TLS handshake
(``tls.RequestClientCert``) and verifies it in the x509 authenticator, so a certificate from another CA
gets an HTTP 401 instead of a failed handshake. Python's ``ssl`` can only verify during the handshake;
``request_client_certificates`` installs an accepting verify callback on the context through libssl so that
the handshake completes and ``authenticate`` verifies the certificate itself.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_GROUPS = frozenset({"system:masters", "kubeadm:cluster-admins"})
ANONYMOUS = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return bool(ADMIN_GROUPS.intersection(self.groups))

    @property
    def is_anonymous(self) -> bool:
        return self.name == ANONYMOUS


ANONYMOUS_USER = User(ANONYMOUS, (UNAUTHENTICATED,))


class AuthenticationFailed(Exception):
    """Credentials were presented and none of them authenticated (answered with 401)."""


def load_tokens(path: Path | None) -> dict[str, User]:
    tokens: dict[str, User] = {}
    if path is None or not path.exists():
        return tokens
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
            tokens[row[0].strip()] = User(row[1], (*groups, "system:authenticated"),
                                          row[2] if len(row) > 2 else "")
    return tokens


class ClientCA:
    """The client CA bundle, and verification of presented certificates against it (x509 authenticator)."""

    def __init__(self, path: Path | None) -> None:
        self.cas: list[x509.Certificate] = []
        if path is not None and path.exists():
            self.cas = x509.load_pem_x509_certificates(path.read_bytes())
        self._cache: dict[bytes, User | None] = {}

    def user(self, der: bytes) -> User | None:
        """The user of a DER client certificate, or None when it does not verify."""
        if der not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[der] = self._verify(der)
        user = self._cache[der]
        if user is None:
            return None
        return user if self._valid_now(der) else None

    @staticmethod
    def _valid_now(der: bytes) -> bool:
        cert = x509.load_der_x509_certificate(der)
        now = dt.datetime.now(dt.timezone.utc)
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc

    def _verify(self, der: bytes) -> User | None:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        if not any(_issued_by(cert, ca) for ca in self.cas):
            return None
        with contextlib.suppress(x509.ExtensionNotFound):
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE \
                    not in usages:
                return None
        cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not cn:
            return None
        return User(str(cn[0]), (*(str(o) for o in orgs), "system:authenticated"))


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    now = dt.datetime.now(dt.timezone.utc)
    return ca.not_valid_before_utc <= now <= ca.not_valid_after_utc


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def authenticate(request: web.Request, tokens: dict[str, User], client_ca: ClientCA) -> User:
    """The user of a request (``ANONYMOUS_USER`` without credentials); AuthenticationFailed otherwise."""
    failed = False
    der = _peer_certificate(request)
    if der:
        user = client_ca.user(der)
        if user is not None:
            return user
        failed = True
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        user = tokens.get(token)
        if user is not None:
            return user
        failed = True
    if failed:
        raise AuthenticationFailed()
    return ANONYMOUS_USER


# -------------------------------------------------------------------------------- TLS: ask, do not verify
_SSL_VERIFY_PEER = 0x01
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VerifyCallback(lambda _preverify_ok, _store: 1)


def _libssl() -> ctypes.CDLL | None:
    """The libssl the ``ssl`` module uses (already loaded in this process)."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if line.strip() else ""
            if "/libssl.so" in path:
                return ctypes.CDLL(path)
    return None


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    # CPython's PySSLContext: PyObject_HEAD, then the SSL_CTX pointer.
    value = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    return int(value) if value else None


def request_client_certificates(ctx: ssl.SSLContext, client_ca_file: Path) -> bool:
    """Ask clients for a certificate (advertising ``client_ca_file``'s subjects, as Go's ClientCAs does)
    and accept any in the handshake; ``authenticate`` verifies it. False when this is not possible here
    (the context then keeps verifying in the handshake)."""
    lib = _libssl()
    pointer = _ssl_ctx_pointer(ctx)
    if lib is None or pointer is None:
        return False
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_load_client_CA_file.argtypes = [ctypes.c_char_p]
    lib.SSL_load_client_CA_file.restype = ctypes.c_void_p
    lib.SSL_CTX_set_client_CA_list.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.SSL_CTX_set_client_CA_list.restype = None
    # Check that the pointer really is this context's SSL_CTX: its verify mode follows ctx.verify_mode.
    ctx.verify_mode = ssl.CERT_REQUIRED
    if lib.SSL_CTX_get_verify_mode(pointer) != 0x03:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return False
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if lib.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        return False
    lib.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _ACCEPT_ANY)
    names = lib.SSL_load_client_CA_file(str(client_ca_file).encode())
    if names:
        lib.SSL_CTX_set_client_CA_list(pointer, names)  # takes ownership of the list
    return True
