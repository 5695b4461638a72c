"""The transport's pure rules, as client-go has them: which proxy, which credential, which exec stanzas pass."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.errors import ConfigError, DrError
from kubectl_dr.kube import client, exec_plugin, tls, transport
from kubectl_dr.kube.exec import open_exec
from kubectl_dr.kube.kubeconfig import ResolvedConfig


def resolved(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> ResolvedConfig:
    body = {"server": "https://api.example:6443", **(cluster or {})}
    config = {"clusters": [{"name": "c", "cluster": body}], "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}
    return ResolvedConfig(config, "x", "c", "u", "default", body["server"])


@pytest.mark.parametrize(("server", "cluster", "env", "expected"), [
    # proxy-url wins over the environment, and applies even to loopback (the user named it).
    ("https://127.0.0.1:6443", {"proxy-url": "socks5://p:1080"}, {"HTTPS_PROXY": "http://e:3128"}, "socks5://p:1080"),
    # the environment: HTTPS_PROXY for https, HTTP_PROXY for http; a bare host:port means http://
    ("https://api.example:6443", {}, {"HTTPS_PROXY": "e:3128"}, "http://e:3128"),
    ("http://api.example:8080", {}, {"HTTPS_PROXY": "http://s:1", "http_proxy": "http://h:2"}, "http://h:2"),
    # Go never proxies loopback from the environment
    ("https://127.0.0.1:6443", {}, {"HTTPS_PROXY": "http://e:3128"}, None),
    ("https://localhost:6443", {}, {"HTTPS_PROXY": "http://e:3128"}, None),
    # NO_PROXY: suffixes with or without the dot, CIDRs, host:port, *
    ("https://api.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": ".example"}, None),
    ("https://a.api.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "api.example"}, None),
    ("https://10.1.2.3:6443", {}, {"HTTPS_PROXY": "http://e:1", "no_proxy": "10.0.0.0/8"}, None),
    ("https://api.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "api.example:443"}, "http://e:1"),
    ("https://api.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "api.example:6443"}, None),
    ("https://api.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "*"}, None),
    ("https://notapi.example:6443", {}, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "api.example"}, "http://e:1"),
])
def test_proxy_choice(server: str, cluster: dict[str, Any], env: dict[str, str], expected: str | None) -> None:
    assert transport.proxy_for(server, cluster, env) == expected


def test_credential_order(tmp_path: Path) -> None:
    plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": "p", "interactiveMode": "Never"}
    # A token beats basic auth and a plugin; the plugin runs only without token, basic auth or certificate.
    assert transport.Transport(resolved({"token": "t", "username": "a", "password": "b", "exec": plugin})) \
        .auth_headers() == {"Authorization": "Bearer t"}
    basic = transport.Transport(resolved({"username": "a", "password": "b"})).auth_headers()
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}
    assert isinstance(transport.Transport(resolved({"exec": plugin})).credentials, transport.Plugin)
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    with_cert = transport.Transport(resolved({"client-certificate-data": pem, "client-key-data": pem, "exec": plugin}))
    assert isinstance(with_cert.credentials, transport.Static) and with_cert.auth_headers() == {}
    # tokenFile beats token (client-go: the file is read again and again; the token only seeds it).
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert transport.Transport(resolved({"token": "t", "tokenFile": str(token_file)})).auth_headers() == \
        {"Authorization": "Bearer from-file"}


def test_auth_provider_and_exec_together_are_refused() -> None:
    plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": "p", "interactiveMode": "Never"}
    with pytest.raises(ConfigError, match="authProvider cannot be provided in combination with an exec plugin for u"):
        transport.Transport(resolved({"auth-provider": {"name": "oidc"}, "exec": plugin}))


@pytest.mark.parametrize(("stanza", "message"), [
    ({"apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Never"},
     "command must be specified for u to use exec authentication plugin"),
    ({"command": "p", "interactiveMode": "Never"},
     "apiVersion must be specified for u to use exec authentication plugin"),
    ({"command": "p", "apiVersion": "client.authentication.k8s.io/v1alpha1"},
     'exec plugin: invalid apiVersion "client.authentication.k8s.io/v1alpha1"'),
    ({"command": "p", "apiVersion": "client.authentication.k8s.io/v1"},
     "interactiveMode must be specified for u to use exec authentication plugin"),
    ({"command": "p", "apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Sometimes"},
     'invalid interactiveMode for u: "Sometimes"'),
    ({"command": "p", "apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Never",
      "env": [{"value": "x"}]}, "env variable name must be specified for u to use exec authentication plugin"),
])
def test_exec_stanza_checks(stanza: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        exec_plugin.validate("u", stanza)
    assert str(err.value) == message


def test_v1beta1_defaults_to_if_available() -> None:
    stanza = {"command": "p", "apiVersion": "client.authentication.k8s.io/v1beta1"}
    exec_plugin.validate("u", stanza)
    assert exec_plugin.mode_of(stanza) == "IfAvailable"
    # IfAvailable without a terminal: not interactive, and no error.
    plugin = exec_plugin.ExecPlugin(stanza, None, stdin_is_terminal=lambda: False)
    assert plugin._interactive() is False


def test_plugin_answers_are_checked() -> None:
    plugin = exec_plugin.ExecPlugin({"command": "p", "apiVersion": "client.authentication.k8s.io/v1",
                                     "interactiveMode": "Never"}, None)
    v1 = "client.authentication.k8s.io/v1"
    for answer, message in (
        ({"apiVersion": v1, "kind": "ExecCredential"}, "exec plugin didn't return a status field"),
        ({"apiVersion": v1, "status": {}}, "exec plugin didn't return a token or cert/key pair"),
        ({"apiVersion": v1, "status": {"clientCertificateData": "c"}},
         "exec plugin returned only certificate or key, not both"),
    ):
        with pytest.raises(Exception) as err:
            plugin._parse(json.dumps(answer).encode())
        assert str(err.value) == f"getting credentials: {message}"
    ok = plugin._parse(json.dumps({"apiVersion": v1, "status": {
        "token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"}}).encode())
    assert ok.token == "t" and ok.expires == 1893456000.0 and not ok.expired(1893455999.0) and ok.expired(1893456001.0)


def test_insecure_with_a_ca_is_refused_and_the_ca_data_wins(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="specifying a root certificates file with the insecure flag is not allowed"):
        tls.server_trust({"insecure-skip-tls-verify": True, "certificate-authority-data": "eA=="})
    (tmp_path / "ca.crt").write_text("from the file")
    trust = tls.server_trust({"certificate-authority": str(tmp_path / "ca.crt"), "certificate-authority-data": "eA=="})
    assert trust.ca_pem == "x" and not trust.insecure
    with pytest.raises(ConfigError, match=r"unable to read certificate-authority .*/nope due to open .*/nope: "
                                          "no such file or directory"):
        tls.server_trust({"certificate-authority": str(tmp_path / "nope")})


def test_a_verifying_context_always_checks_the_name() -> None:
    context = tls.context_for(tls.ServerTrust(None, False, None), None)
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
    named = tls.context_for(tls.ServerTrust(None, False, "kubernetes.default.svc"), None)
    assert named.check_hostname
    insecure = tls.context_for(tls.ServerTrust(None, True, None), None)
    assert not insecure.check_hostname and insecure.verify_mode.name == "CERT_NONE"


def test_query_values_are_percent_encoded_with_the_server_prefix_kept() -> None:
    t = transport.Transport(resolved({}, {"server": "https://api.example:6443/prefix/"}))
    url = t.url("/api/v1/namespaces/a/pods/b/exec", [("command", "sh"), ("command", "-c"), ("command", "a b&c=/d")])
    assert url == ("https://api.example:6443/prefix/api/v1/namespaces/a/pods/b/exec"
                   "?command=sh&command=-c&command=a%20b%26c%3D%2Fd")


def test_a_bare_host_port_is_https() -> None:
    assert transport.Transport(resolved({}, {"server": "api.example:6443"})).url("/version") == \
        "https://api.example:6443/version"


def test_half_a_client_certificate_is_refused_in_clientcmds_words() -> None:
    pem = base64.b64encode(b"x").decode()
    with pytest.raises(ConfigError) as err:
        transport.Transport(resolved({"client-certificate-data": pem}))
    assert str(err.value) == ("client-key-data or client-key must be specified for u to use the clientCert "
                              "authentication method.")


# -- what must never leave this machine, or reach another host: real sockets, no API server needed ------------


class Listener:
    """A TCP listener on loopback that records what each connection sends first, and answers `reply` (then closes)."""

    def __init__(self, reply: bytes = b"") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                self.received.append(data)
                with contextlib.suppress(OSError):
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


def plain(server: str, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> client.Kube:
    config = resolved(user, {"server": server, **(cluster or {})})
    config.server = server
    return client.connect(config, 5)


def test_an_exec_upgrade_answered_with_a_redirect_is_not_followed() -> None:
    # websocket-client follows up to three redirects by default, to any host and to ws:// too, with the
    # Authorization header: the token would go wherever the answer points.
    elsewhere = Listener()
    server = Listener(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:%d/steal\r\nContent-Length: 0\r\n\r\n"
                      % elsewhere.port)
    try:
        kube = plain(f"http://127.0.0.1:{server.port}", {"token": "SECRET-TOKEN"})
        with pytest.raises(DrError, match="answered the exec request with a redirect, which kubectl dr does not"):
            open_exec(kube, "default", "p", ["true"])
        assert len(server.received) == 1 and b"SECRET-TOKEN" in server.received[0]  # the server asked: it got it
        time.sleep(0.2)
        assert elsewhere.received == []
    finally:
        server.close()
        elsewhere.close()


def test_proxy_credentials_go_to_the_proxy_and_nowhere_else() -> None:
    proxy = Listener(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    try:
        kube = plain("https://api.example:6443", {"token": "t"},
                     {"proxy-url": f"http://alice:s3cr%40t@127.0.0.1:{proxy.port}"})
        with pytest.raises(DrError) as err:
            kube.get("/version")
        [request] = proxy.received
        assert request.startswith(b"CONNECT api.example:6443 ")
        assert b"proxy-authorization: basic " + base64.b64encode(b"alice:s3cr@t").lower() in request.lower()
        assert b"Bearer t" not in request  # the token travels inside the tunnel only
        message = str(err.value)
        assert message.startswith("unable to connect to the server api.example:6443: proxyconnect: ")
        assert "s3cr" not in message and "alice" not in message
    finally:
        proxy.close()


def test_exec_streams_refuse_an_https_proxy() -> None:
    # websocket-client speaks plain TCP to its proxy: the CONNECT and its credentials would cross in clear.
    kube = plain("https://api.example:6443", {"token": "t"}, {"proxy-url": "https://alice:pw@proxy.example:3128"})
    with pytest.raises(ConfigError) as err:
        open_exec(kube, "default", "p", ["true"])
    assert "an https:// proxy is not supported for exec streams" in str(err.value)
    assert "alice" not in str(err.value) and "pw@" not in str(err.value)


@pytest.mark.parametrize("value", ["false", "true", 0, "no"])
def test_insecure_skip_tls_verify_must_be_a_boolean(value: Any) -> None:
    # A quoted "false" is a non-empty string: taken for its truth it would switch every check off.
    with pytest.raises(ConfigError, match="insecure-skip-tls-verify must be true or false"):
        tls.server_trust({"server": "https://api.example:6443", "insecure-skip-tls-verify": value})
    assert tls.server_trust({"insecure-skip-tls-verify": False}).insecure is False


def test_a_port_that_never_speaks_tls_fails_after_the_connect_timeout_not_never() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody accepts from; TLS then waits for an
    # answer that never comes. Without a --request-timeout nothing else bounds the request: before the connect
    # timeout this hung the command for ever (client-go gives the dial 30 s and the handshake 10 s).
    assert transport.CONNECT_TIMEOUT == 30.0
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    outcome: list[BaseException] = []

    def ask() -> None:
        config = resolved({"token": "t"}, {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True})
        kube = client.connect(config)  # no request timeout
        kube.transport.connect_timeout = 0.5
        try:
            kube.request("GET", "/version")
        except BaseException as exc:  # whatever ended the request is what the test reads
            outcome.append(exc)

    with silent:
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        asker.join(60)
    assert not asker.is_alive(), "the request is still waiting on a server that never answers"
    [error] = outcome
    assert isinstance(error, DrError)
    assert error.message == f"unable to connect to the server 127.0.0.1:{port}: TLS handshake timeout " \
                            "(no answer within 0.5 s)"
    assert "VPN, firewall, proxy" in (error.hint or "")


def test_a_request_timeout_still_reads_as_the_request_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    with silent:
        config = resolved({"token": "t"}, {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True})
        with pytest.raises(DrError, match="did not answer in time \\(request timeout\\)"):
            client.connect(config, 0.5).request("GET", "/version")
