"""Our own HTTP transport to the API server: urllib3 pools over an `ssl.SSLContext` we build, and the user's
credentials, from the kubeconfig that `kubeconfig.resolve` reduced to one context.

It replaces the `kubernetes` package on every path but `auth-provider` users: importing that package costs
about a third of a second (its `config` package pulls requests, oauthlib, pydantic, google-auth…) on every
command, for the few things we used of it. What we take over, with kubectl's (client-go's) rules:
- the server URL (a path prefix, as behind Rancher, kept), TLS (see `tls`), `proxy-url`, else the
  `HTTPS_PROXY`/`HTTP_PROXY` of the environment minus `NO_PROXY` and minus loopback addresses (Go's
  `http.ProxyFromEnvironment` never proxies those);
- credentials, in client-go's order: `token` (or `tokenFile`), `username`/`password`, `auth-provider`; an
  `exec` plugin only when none of those and no client certificate is configured (exec.go's
  UpdateTransportConfig); a plugin may also answer with a client certificate, which then replaces the TLS
  context (client-go closes its connections when the certificate rotates; new pools do the same here);
- `tokenFile` is read at connect (a missing file is an error then) and again when the last read is over a
  minute old (client-go's CachedFileTokenSource period); a failed re-read keeps the last token, as there.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlencode, urlparse

import urllib3

from kubectl_dr.errors import ConfigError
from kubectl_dr.kube import exec_plugin, tls
from kubectl_dr.kube.kubeconfig import ResolvedConfig

TOKEN_FILE_PERIOD = 60.0  # client-go re-reads a token file once a minute
# client-go dials with a 30 s timeout and gives the TLS handshake 10 s; without a --request-timeout nothing
# else bounds a request (a watch or a long list may take minutes). urllib3 applies its connect timeout to the
# TCP connect and to the handshake, so one figure covers both: an address that drops packets or a port that
# takes the connection and never speaks TLS fails after this, instead of hanging the command for ever.
CONNECT_TIMEOUT = 30.0
POOL_SIZE = 10  # connections kept per host; threads beyond that open short-lived ones (never block)


class Credentials(Protocol):
    def authorization(self) -> str | None: ...

    def client_cert(self) -> tls.ClientCert | None: ...

    def refused(self) -> None:
        """The server answered 401 to what we sent: credentials that can be renewed are, next time."""


@dataclass
class Static:
    """What does not change while we run: a token, basic auth, a certificate from the kubeconfig."""

    header: str | None
    cert: tls.ClientCert | None

    def authorization(self) -> str | None:
        return self.header

    def client_cert(self) -> tls.ClientCert | None:
        return self.cert

    def refused(self) -> None:
        pass


class TokenFile:
    """`tokenFile` (and the in-cluster service-account token, which the kubelet rotates)."""

    def __init__(self, path: str, fallback: str | None, cert: tls.ClientCert | None) -> None:
        self.path = Path(path)
        self.cert = cert
        self.lock = threading.Lock()
        self.read_at = 0.0
        self.token = fallback
        self._read(first=fallback is None)

    def _read(self, *, first: bool) -> None:
        try:
            self.token = self.path.read_text().strip()
        except OSError as exc:
            if first:
                reason = (exc.strerror or str(exc)).lower()
                raise ConfigError(f"open {self.path}: {reason}") from None
            # client-go logs and keeps the token it has; so do we (silently: it is still valid until it is not).
        self.read_at = time.monotonic()

    def authorization(self) -> str | None:
        with self.lock:
            if time.monotonic() - self.read_at > TOKEN_FILE_PERIOD:
                self._read(first=False)
            return f"Bearer {self.token}" if self.token else None

    def client_cert(self) -> tls.ClientCert | None:
        return self.cert

    def refused(self) -> None:
        pass


class Plugin:
    """An exec credential plugin's token and/or certificate, renewed when it expires or is refused."""

    def __init__(self, plugin: exec_plugin.ExecPlugin) -> None:
        self.plugin = plugin

    def authorization(self) -> str | None:
        token = self.plugin.credential().token
        return f"Bearer {token}" if token else None

    def client_cert(self) -> tls.ClientCert | None:
        # The answer `authorization` just got for this request: a credential that expired between the two
        # calls must not run the plugin twice for one request (it is renewed before the next one).
        cached = self.plugin.cached
        return (cached or self.plugin.credential()).cert

    def refused(self) -> None:
        # The answer we hold now: if another thread renewed it meanwhile, that one goes too (one extra run).
        self.plugin.forget(self.plugin.cached)


class ProviderToken:
    """An `auth-provider` user: the token comes from the `kubernetes` package (see `auth_provider`)."""

    def __init__(self, resolved: ResolvedConfig, cert: tls.ClientCert | None) -> None:
        from kubectl_dr.kube import auth_provider  # only these users pay for importing `kubernetes`

        self.source = auth_provider.ProviderSource(resolved)
        self.cert = cert

    def authorization(self) -> str | None:
        return self.source.authorization()

    def client_cert(self) -> tls.ClientCert | None:
        return self.cert

    def refused(self) -> None:
        pass


def credentials_for(resolved: ResolvedConfig, cluster: dict[str, Any], trust: tls.ServerTrust) -> Credentials:
    user = _section(resolved.config, "users", "user")
    cert = tls.client_cert(user, resolved.user_name or "the user")
    if user.get("auth-provider") and user.get("exec"):
        raise ConfigError(f"authProvider cannot be provided in combination with an exec plugin for "
                          f"{resolved.user_name}")
    token = str(user.get("token") or "") or None
    if user.get("tokenFile"):
        return TokenFile(str(user["tokenFile"]), token, cert)
    if token:
        return Static(f"Bearer {token}", cert)
    if user.get("username") or user.get("password"):
        pair = f"{user.get('username', '')}:{user.get('password', '')}".encode()
        return Static("Basic " + base64.b64encode(pair).decode(), cert)
    if user.get("auth-provider"):
        return ProviderToken(resolved, cert)
    if isinstance(user.get("exec"), dict) and cert is None:
        exec_plugin.validate(resolved.user_name or "the user", user["exec"])
        info = exec_plugin.cluster_info(cluster, trust.ca_pem)
        return Plugin(exec_plugin.ExecPlugin(user["exec"], info))
    return Static(None, cert)


def _section(config: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    entries = config.get(section) or []
    body = (entries[0] or {}).get(key) if entries else None
    return dict(body or {})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bypass_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY as Go reads it: `*`, exact names, domain suffixes (leading dot optional), IPs and CIDRs."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
        name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and str(port) != entry_port:
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(server: str, cluster: dict[str, Any], environ: Mapping[str, str]) -> str | None:
    if cluster.get("proxy-url"):
        return str(cluster["proxy-url"])
    parsed = urlparse(server)
    host = parsed.hostname or ""
    if _loopback(host):
        return None
    names = ("HTTPS_PROXY", "https_proxy") if parsed.scheme == "https" else ("HTTP_PROXY", "http_proxy")
    proxy = next((environ[n] for n in names if environ.get(n)), None)
    if not proxy:
        return None
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    if bypass_proxy(host, parsed.port or (443 if parsed.scheme == "https" else 80), no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def redacted(proxy_url: str) -> str:
    """A proxy URL fit for a message: without its user and password."""
    parsed = urlparse(proxy_url)
    if not parsed.username and not parsed.password:
        return proxy_url
    host = parsed.hostname or ""
    return parsed._replace(netloc=f"{host}:{parsed.port}" if parsed.port else host).geturl()


def client_library_version() -> str:
    """What `kubectl dr version` names as the client library: the HTTP library this transport speaks through."""
    # The module that defines it: urllib3's package root does not export __version__ to a strict type check.
    from urllib3._version import __version__

    return str(__version__)


class HandshakeTimeout(urllib3.exceptions.ConnectTimeoutError):
    """The server took the TCP connection and never finished the TLS handshake within the connect timeout."""


class Transport:
    """Everything a request or an exec stream needs: URL, headers, TLS context, proxy, and the pool."""

    def __init__(self, resolved: ResolvedConfig, environ: Mapping[str, str] | None = None) -> None:
        cluster = _section(resolved.config, "clusters", "cluster")
        self.server = str(cluster.get("server") or resolved.server).rstrip("/")
        if "://" not in self.server:
            self.server = "https://" + self.server  # client-go takes a bare host:port as https
        parsed = urlparse(self.server)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ConfigError(f"invalid configuration: host must be a URL or a host:port pair: "
                              f"{resolved.server!r}")
        self.secure = parsed.scheme == "https"
        self.trust = tls.server_trust(cluster)
        self.credentials = credentials_for(resolved, cluster, self.trust)
        self.proxy = proxy_for(self.server, cluster, os.environ if environ is None else environ)
        self.lock = threading.Lock()
        self._cert: tls.ClientCert | None = None
        self._context: Any = None
        self._pool: urllib3.PoolManager | None = None
        self._built = False
        self.connect_timeout = CONNECT_TIMEOUT

    @property
    def server_hostname(self) -> str | None:
        return self.trust.server_name

    def url(self, path: str, query: list[tuple[str, Any]] | None = None) -> str:
        """The server's URL for `path`; a query value None is left out, a bool is written as the API reads it
        (`true`/`false`, where Python would say `True`)."""
        url = self.server + path
        pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query or [] if v is not None]
        if pairs:
            # quote (not quote_plus), as the kubernetes client encoded values: a space is %20, never "+".
            url += "?" + urlencode(pairs, quote_via=quote, safe="")
        return url

    def auth_headers(self) -> dict[str, str]:
        header = self.credentials.authorization()
        return {"Authorization": header} if header else {}

    def refused(self) -> None:
        """The server answered 401: credentials that can be renewed (an exec plugin's) are, next time."""
        self.credentials.refused()

    def ssl_context(self) -> Any:
        """The TLS context for the current client certificate (an exec plugin may rotate it)."""
        return self._current()[0]

    def pool(self) -> urllib3.PoolManager:
        return self._current()[1]

    def _current(self) -> tuple[Any, urllib3.PoolManager]:
        cert = self.credentials.client_cert()
        with self.lock:
            if not self._built or cert != self._cert:
                old = self._pool
                context = tls.context_for(self.trust, cert) if self.secure else None
                self._context, self._pool, self._cert, self._built = context, self._new_pool(context), cert, True
                if old is not None:
                    old.clear()
            assert self._pool is not None
            return self._context, self._pool

    def _new_pool(self, context: Any) -> urllib3.PoolManager:
        options: dict[str, Any] = {"num_pools": 4, "maxsize": POOL_SIZE, "retries": False}
        if context is not None:
            options["ssl_context"] = context
            if self.trust.server_name:
                options["server_hostname"] = self.trust.server_name
            if self.trust.insecure:
                options["assert_hostname"] = False
        if not self.proxy:
            return urllib3.PoolManager(**options)
        scheme = urlparse(self.proxy).scheme.lower()
        if scheme.startswith("socks"):
            try:
                from urllib3.contrib.socks import SOCKSProxyManager
            except ImportError:
                raise ConfigError(f"proxy-url {redacted(self.proxy)}: a SOCKS proxy needs the PySocks package "
                                  "(pip install 'urllib3[socks]')") from None
            return SOCKSProxyManager(self.proxy, **options)
        if scheme not in ("http", "https"):
            raise ConfigError(f"invalid configuration: proxy-url scheme {scheme!r} is not supported "
                              "(http, https, socks5)")
        proxy = urlparse(self.proxy)
        if proxy.username:
            # urllib3 does not turn the URL's user:password into Proxy-Authorization itself (Go's transport does).
            options["proxy_headers"] = urllib3.make_headers(
                proxy_basic_auth=f"{unquote(proxy.username)}:{unquote(proxy.password or '')}")
        return urllib3.ProxyManager(self.proxy, **options)

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: float | None) -> urllib3.BaseHTTPResponse:
        bound = (urllib3.Timeout(total=timeout) if timeout
                 else urllib3.Timeout(connect=self.connect_timeout, read=None))
        try:
            return self.pool().request(method, url, body=body, headers=headers, retries=False, timeout=bound,
                                       preload_content=True, redirect=False)
        except urllib3.exceptions.ReadTimeoutError as exc:
            if timeout:
                raise
            # No read timeout was set, so only the connect timeout can have run out: in the TLS handshake,
            # which urllib3 reports as a read timeout. Said as what it is, not as a --request-timeout to raise.
            raise HandshakeTimeout(f"TLS handshake timeout (no answer within {self.connect_timeout:g} s)") from exc

    def close(self) -> None:
        with self.lock:
            if self._pool is not None:
                self._pool.clear()
