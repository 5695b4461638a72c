"""Our own transport to the API server, against the loopback cluster: every way a kubeconfig says who we are and
how to trust the server, and that no command but an auth-provider user's imports the `kubernetes` package.

Who the server took us for is read back with a SelfSubjectReview (`kubectl auth whoami`'s request): a token
that was not sent, or sent for the wrong user, shows there, not just in a 401.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pty
import secrets
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_dr import cleanup
from kubectl_dr.errors import ConfigError, DrError, UnauthorizedError
from kubectl_dr.kube import kubeconfig, transport
from kubectl_dr.kube.client import Kube, connect
from kubectl_dr.kube.exec import open_exec
from tests.cli_runner import clean_env, dr, executable
from tests.cluster.control.pki import ADMIN_USER, TOKEN_USER
from tests.cluster.fixture import Cluster
from tests.datasets import make_claim, managed_pods, new_namespace
from tests.e2e.test_exec_layer import running_pod
from tests.polling import eventually
from tests.unit.test_kube_transport_rules import Listener

V1 = "client.authentication.k8s.io/v1"


def _config(cluster: Cluster) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text())
    return data


def _write(tmp_path: Path, config: dict[str, Any], name: str = "config") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _with(cluster: Cluster, tmp_path: Path, *, user: dict[str, Any] | None = None,
          cluster_fields: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """The cluster's kubeconfig with the admin context's user replaced and cluster fields changed."""
    config = copy.deepcopy(_config(cluster))
    body = config["clusters"][0]["cluster"]
    for key in drop:
        body.pop(key, None)
    body.update(cluster_fields or {})
    if user is not None:
        admin = config["contexts"][0]["context"]["user"]
        for entry in config["users"]:
            if entry["name"] == admin:
                entry["user"] = user
    return _write(tmp_path, config)


def _kube(path: Path) -> Kube:
    return connect(kubeconfig.resolve(kubeconfig.Overrides(kubeconfig=str(path))), 30)


def whoami(kube: Kube) -> str:
    review = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(review["status"]["userInfo"]["username"])


def _add_token(cluster: Cluster, user: str, groups: str = "", token: str | None = None) -> str:
    """A new static token (the server re-reads tokens.csv when it changes)."""
    token = token or secrets.token_hex(16)
    with (cluster.layout.pki / "tokens.csv").open("a") as handle:
        handle.write(f'{token},{user},{user}-uid,"{groups}"\n')
    return token


def _plugin(tmp_path: Path, name: str, body: str) -> Path:
    """A credential plugin: a small Python script that logs each run (and what it was told) to NAME.runs."""
    script = tmp_path / name
    script.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(f"""\
        import json, os, sys, time
        with open({str(tmp_path / (name + ".runs"))!r}, "a") as log:
            log.write(os.environ.get("KUBERNETES_EXEC_INFO", "") + "\\n")
        """) + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def _runs(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / (name + ".runs")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _exec_user(command: Path, **extra: Any) -> dict[str, Any]:
    return {"exec": {"apiVersion": V1, "command": str(command), "interactiveMode": "Never", **extra}}


# -- the process: no `kubernetes` import ----------------------------------------------------------------------


def _imported(stderr: str) -> set[str]:
    """Top-level package names from `-X importtime` lines (`import time: self | cumulative | name`)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_version_and_a_backup_import_no_kubernetes(cluster: Cluster, tmp_path: Path) -> None:
    profile = {"PYTHONPROFILEIMPORTTIME": "1", "KUBECTL_DR_CONFIG": "/dev/null"}
    version = dr("version", cluster=cluster, extra_env=profile, subprocess=True)
    assert version.returncode == 0, version.stderr
    assert "Server Version: v1." in version.stdout
    loaded = _imported(version.stderr)
    assert "urllib3" in loaded and "kubectl_dr" in loaded  # the profile is real: it saw our own imports
    assert "kubernetes" not in loaded

    ns = new_namespace(cluster, "transport")
    make_claim(cluster, ns)
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path / "repo"), "-o", "json",
                cluster=cluster, extra_env=profile, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["id"]
    loaded = _imported(backup.stderr)
    assert "websocket" in loaded  # it did start a pod and stream from it
    assert "kubernetes" not in loaded
    eventually(lambda: managed_pods(cluster, ns) == [], what="the backup's pod gone")


# -- users ------------------------------------------------------------------------------------------------------


def test_client_certificate_from_files_and_from_data(cluster: Cluster, tmp_path: Path) -> None:
    assert whoami(_kube(cluster.kubeconfig)) == ADMIN_USER  # the default kubeconfig: inline data
    pki = cluster.layout.pki
    files = _with(cluster, tmp_path, user={"client-certificate": str(pki / "admin.crt"),
                                           "client-key": str(pki / "admin.key")})
    assert whoami(_kube(files)) == ADMIN_USER


def test_token_and_token_file(cluster: Cluster, tmp_path: Path) -> None:
    token = (cluster.layout.pki / "token").read_text().strip()
    assert whoami(_kube(_with(cluster, tmp_path, user={"token": token}))) == TOKEN_USER

    second = _add_token(cluster, "dr-token-file-user")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    kube = _kube(_with(cluster, tmp_path, user={"tokenFile": str(token_file)}))
    assert whoami(kube) == TOKEN_USER
    # The file is read again once its last read is older than the period (client-go: a minute).
    token_file.write_text(second)
    assert whoami(kube) == TOKEN_USER
    assert isinstance(kube.transport.credentials, transport.TokenFile)
    kube.transport.credentials.read_at -= transport.TOKEN_FILE_PERIOD + 1
    eventually(lambda: whoami(kube) == "dr-token-file-user", what="the new token in use")
    # A token file that cannot be read at connect is the user's error, in kubectl's words.
    with pytest.raises(ConfigError, match=r"open .*/missing: no such file or directory"):
        _kube(_with(cluster, tmp_path, user={"tokenFile": str(tmp_path / "missing")}))


def test_in_cluster_service_account(cluster: Cluster, tmp_path: Path) -> None:
    """A pod's view: the token and CA files of its service account, the API's address in the environment."""
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text((cluster.layout.pki / "token").read_text().strip())
    (sa_dir / "ca.crt").write_bytes((cluster.layout.pki / "ca.crt").read_bytes())
    (sa_dir / "namespace").write_text("shop")
    port = cluster.server_url.rsplit(":", 1)[1]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    resolved = kubeconfig.in_cluster_config(env, kubeconfig.Overrides(), sa_dir)
    kube = connect(resolved, 30)
    assert resolved.namespace == "shop" and whoami(kube) == TOKEN_USER


def test_wrong_token_is_unauthorized(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(UnauthorizedError):
        whoami(_kube(_with(cluster, tmp_path, user={"token": "not-a-token"})))


def test_exec_plugin_token_reaches_requests_and_exec_streams(cluster: Cluster, tmp_path: Path) -> None:
    token = _add_token(cluster, "dr-plugin-admin", "system:masters")
    plugin = _plugin(tmp_path, "plugin", f"""\
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential", "status": {{"token": "{token}"}}}}))
        """)
    path = _with(cluster, tmp_path, user=_exec_user(plugin, provideClusterInfo=True,
                                                    env=[{"name": "PLUGIN_SETTING", "value": "x"}]))
    kube = _kube(path)
    assert whoami(kube) == "dr-plugin-admin"
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, "default")
        out: list[bytes] = []
        stream = open_exec(kube, "default", pod.name, ["echo", "through the plugin's token"])
        stream.run(stdout=out.append).check("echo")
        assert b"".join(out) == b"through the plugin's token\n"
        pod.delete()
    runs = _runs(tmp_path, "plugin")
    assert len(runs) == 1  # no expiry: one run for every request and stream of the connection
    assert runs[0]["apiVersion"] == V1 and runs[0]["spec"]["interactive"] is False
    cluster_info = runs[0]["spec"]["cluster"]
    assert cluster_info["server"] == cluster.server_url
    assert base64.b64decode(cluster_info["certificate-authority-data"]) == (cluster.layout.pki / "ca.crt").read_bytes()


def test_exec_plugin_runs_again_when_its_credential_expires(cluster: Cluster, tmp_path: Path) -> None:
    token = _add_token(cluster, "dr-plugin-expiring")
    plugin = _plugin(tmp_path, "expiring", f"""\
        from datetime import datetime, timedelta, timezone
        # 1 s from now, rounded up to the whole second the format can hold
        expires = (datetime.now(timezone.utc) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
                          "status": {{"token": "{token}", "expirationTimestamp": expires}}}}))
        """)
    kube = _kube(_with(cluster, tmp_path, user=_exec_user(plugin)))
    assert whoami(kube) == "dr-plugin-expiring"
    assert len(_runs(tmp_path, "expiring")) == 1
    credentials = kube.transport.credentials
    assert isinstance(credentials, transport.Plugin)
    # Expired (1–2 s after the run): the next request runs it again.
    eventually(lambda: credentials.plugin.cached is not None and credentials.plugin.cached.expired(time.time()),
               what="the credential expired", timeout=5)
    assert whoami(kube) == "dr-plugin-expiring"
    assert len(_runs(tmp_path, "expiring")) == 2
    assert "spec" in _runs(tmp_path, "expiring")[1] and "cluster" not in _runs(tmp_path, "expiring")[1]["spec"]

    # A credential that expires in an hour is used for every request until then: one run.
    later = _plugin(tmp_path, "later", f"""\
        from datetime import datetime, timedelta, timezone
        expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
                          "status": {{"token": "{token}", "expirationTimestamp": expires}}}}))
        """)
    kube = _kube(_with(cluster, tmp_path, user=_exec_user(later)))
    assert [whoami(kube) for _ in range(3)] == ["dr-plugin-expiring"] * 3
    assert len(_runs(tmp_path, "later")) == 1


def test_a_refused_plugin_token_runs_the_plugin_again(cluster: Cluster, tmp_path: Path) -> None:
    """client-go's rule: after a 401 the next request runs the plugin first (the refused request is not retried)."""
    token = _add_token(cluster, "dr-plugin-second-try")
    plugin = _plugin(tmp_path, "stale", f"""\
        first = len(open({str(tmp_path / "stale.runs")!r}).read().splitlines()) == 1
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
                          "status": {{"token": "stale" if first else "{token}"}}}}))
        """)
    kube = _kube(_with(cluster, tmp_path, user=_exec_user(plugin)))
    with pytest.raises(UnauthorizedError):
        whoami(kube)
    assert whoami(kube) == "dr-plugin-second-try"
    assert whoami(kube) == "dr-plugin-second-try"
    assert len(_runs(tmp_path, "stale")) == 2


def test_exec_plugin_client_certificate(cluster: Cluster, tmp_path: Path) -> None:
    pki = cluster.layout.pki
    answer = {"apiVersion": V1, "kind": "ExecCredential",
              "status": {"clientCertificateData": (pki / "admin.crt").read_text(),
                         "clientKeyData": (pki / "admin.key").read_text()}}
    plugin = _plugin(tmp_path, "certs", f"print(json.dumps({answer!r}))\n")
    assert whoami(_kube(_with(cluster, tmp_path, user=_exec_user(plugin)))) == ADMIN_USER


def test_exec_plugin_failures_in_kubectls_words(cluster: Cluster, tmp_path: Path) -> None:
    failing = _plugin(tmp_path, "failing", 'sys.stderr.write("no login\\n")\nsys.exit(1)\n')
    kube = _kube(_with(cluster, tmp_path, user=_exec_user(failing)))
    with pytest.raises(DrError) as err:
        whoami(kube)
    assert str(err.value) == f"getting credentials: exec: executable {failing} failed with exit code 1"

    missing = tmp_path / "no-such-plugin"
    kube = _kube(_with(cluster, tmp_path, user=_exec_user(missing, installHint="install it with: apt install x")))
    with pytest.raises(DrError) as err:
        whoami(kube)
    assert str(err.value).startswith(f"getting credentials: exec: executable {missing} not found\n\n")
    assert str(err.value).endswith("\n\ninstall it with: apt install x")

    wrong = _plugin(tmp_path, "wrong", 'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",'
                                       ' "kind": "ExecCredential", "status": {"token": "x"}}))\n')
    with pytest.raises(DrError) as err:
        whoami(_kube(_with(cluster, tmp_path, user=_exec_user(wrong))))
    assert str(err.value) == ("getting credentials: exec plugin is configured to use API version "
                              f"{V1}, plugin returned version client.authentication.k8s.io/v1beta1")

    # `Always` needs a terminal; the test's stdin is none. v1 without interactiveMode is refused before running.
    always = _with(cluster, tmp_path, user=_exec_user(failing, interactiveMode="Always"))
    with pytest.raises(DrError, match="exec plugin cannot support interactive mode: standard input is not a terminal"):
        whoami(_kube(always))
    unset = _with(cluster, tmp_path, user={"exec": {"apiVersion": V1, "command": str(failing)}})
    with pytest.raises(ConfigError, match="interactiveMode must be specified for loopback-admin"):
        _kube(unset)
    assert len(_runs(tmp_path, "failing")) == 1  # neither of the last two ran it


def test_exec_plugin_gets_the_terminal_when_interactive(cluster: Cluster, tmp_path: Path) -> None:
    """IfAvailable with a terminal on stdin: the plugin is told it may interact and gets that terminal."""
    token = _add_token(cluster, "dr-plugin-interactive")
    plugin = _plugin(tmp_path, "asks", f"""\
        with open({str(tmp_path / "asks.tty")!r}, "w") as out:
            out.write(str(os.isatty(0)))
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential", "status": {{"token": "{token}"}}}}))
        """)
    path = _with(cluster, tmp_path, user=_exec_user(plugin, interactiveMode="IfAvailable"))
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([executable(), "version", "--kubeconfig", str(path)], stdin=follower,
                                capture_output=True, text=True, timeout=120, env=clean_env())
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0, result.stderr
    assert _runs(tmp_path, "asks")[0]["spec"]["interactive"] is True
    assert (tmp_path / "asks.tty").read_text() == "True"
    # Without a terminal the same stanza runs the plugin non-interactively, with no stdin of ours.
    plain = subprocess.run([executable(), "version", "--kubeconfig", str(path)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120, env=clean_env())
    assert plain.returncode == 0, plain.stderr
    assert _runs(tmp_path, "asks")[1]["spec"]["interactive"] is False
    assert (tmp_path / "asks.tty").read_text() == "False"


def test_ctrl_c_gives_a_prompting_plugin_time_to_put_the_terminal_back(cluster: Cluster, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group: kubectl dr and the plugin asking for a password. The
    plugin's own handler (getpass restoring echo) needs a moment; it must not be SIGKILLed before it has had it."""
    plugin = _plugin(tmp_path, "prompting", f"""\
        import signal
        def restore(*_):
            time.sleep(0.5)  # putting the terminal back takes its time
            open({str(tmp_path / "restored")!r}, "w").write("yes")
            sys.exit(1)
        signal.signal(signal.SIGINT, restore)
        open({str(tmp_path / "asking")!r}, "w").write("yes")
        time.sleep(60)
        """)
    path = _with(cluster, tmp_path, user=_exec_user(plugin))
    cli = subprocess.Popen([executable(), "version", "--kubeconfig", str(path)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                           start_new_session=True)
    try:
        eventually(lambda: (tmp_path / "asking").exists(), what="the plugin asking", timeout=60)
        os.killpg(cli.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 130, err
    assert (tmp_path / "restored").read_text() == "yes"
    assert err.strip().endswith("interrupted by SIGINT"), err


def test_the_cli_prints_the_plugin_failure(cluster: Cluster, tmp_path: Path) -> None:
    failing = _plugin(tmp_path, "failing", "sys.exit(3)\n")
    path = _with(cluster, tmp_path, user=_exec_user(failing))
    result = dr("version", "--kubeconfig", str(path), env=clean_env())
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: getting credentials: exec: executable {failing} failed with exit code 3"


def test_removed_auth_providers_get_kubectls_message(cluster: Cluster, tmp_path: Path) -> None:
    path = _with(cluster, tmp_path, user={"auth-provider": {"name": "gcp", "config": {}}})
    result = dr("version", "--kubeconfig", str(path), env=clean_env())
    assert result.returncode == 1
    assert "The gcp auth plugin has been removed." in result.stderr
    assert 'use the "gke-gcloud-auth-plugin" kubectl/client-go credential plugin instead' in result.stderr


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped id-token (the loopback knows it as a static token; no issuer is asked)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def oidc_user(token: str) -> dict[str, Any]:
    return {"auth-provider": {"name": "oidc", "config": {
        "client-id": "kubectl-dr-test", "idp-issuer-url": "https://issuer.invalid", "id-token": token}}}


def test_oidc_auth_provider_goes_through_the_kubernetes_package(cluster: Cluster, tmp_path: Path) -> None:
    token = jwt({"sub": "someone", "exp": int(time.time()) + 3600})
    _add_token(cluster, "dr-oidc-user", token=token)
    path = _with(cluster, tmp_path, user=oidc_user(token))
    assert whoami(_kube(path)) == "dr-oidc-user"
    version = dr("version", "--kubeconfig", str(path), env=clean_env(), extra_env={"PYTHONPROFILEIMPORTTIME": "1"},
                 subprocess=True)
    assert version.returncode == 0, version.stderr
    assert "kubernetes" in _imported(version.stderr)  # the one path that pays for it


# -- the server's certificate -----------------------------------------------------------------------------------


def test_wrong_ca_is_an_x509_error(cluster: Cluster, tmp_path: Path) -> None:
    other_ca = base64.b64encode((cluster.layout.pki / "etcd-ca.crt").read_bytes()).decode()
    path = _with(cluster, tmp_path, cluster_fields={"certificate-authority-data": other_ca})
    with pytest.raises(DrError) as err:
        whoami(_kube(path))
    host = cluster.server_url.removeprefix("https://")
    assert str(err.value) == f"unable to connect to the server {host}: x509: certificate verification failed"


def test_insecure_skip_tls_verify(cluster: Cluster, tmp_path: Path) -> None:
    path = _with(cluster, tmp_path, cluster_fields={"insecure-skip-tls-verify": True},
                 drop=("certificate-authority-data",))
    assert whoami(_kube(path)) == ADMIN_USER
    # With a CA as well it is refused, as client-go refuses it: the user cannot have meant both.
    both = _with(cluster, tmp_path, cluster_fields={"insecure-skip-tls-verify": True})
    with pytest.raises(ConfigError, match="specifying a root certificates file with the insecure flag is not allowed"):
        _kube(both)


def test_tls_server_name(cluster: Cluster, tmp_path: Path) -> None:
    # The loopback's serving certificate names localhost, kubernetes, kubernetes.default(.svc…) and 127.0.0.1.
    good = _with(cluster, tmp_path, cluster_fields={"tls-server-name": "kubernetes.default.svc"})
    kube = _kube(good)
    assert whoami(kube) == ADMIN_USER
    with cleanup.scope(lambda _m: None, lambda _f: None):
        pod = running_pod(kube, "default")  # exec streams check the same name
        open_exec(kube, "default", pod.name, ["true"]).run().check("true")
        pod.delete()
    # A name the certificate does not hold is refused although the CA is right: names are always checked.
    bad = _with(cluster, tmp_path, cluster_fields={"tls-server-name": "elsewhere.example"})
    with pytest.raises(DrError) as err:
        whoami(_kube(bad))
    host = cluster.server_url.removeprefix("https://")
    assert str(err.value) == f"unable to connect to the server {host}: x509: certificate is not valid for " \
                             "elsewhere.example"
    # The exec stream's handshake checks it too (it fails before any pod is looked up).
    with pytest.raises(DrError, match=r"Hostname mismatch, certificate is not valid for 'elsewhere\.example'"):
        open_exec(_kube(bad), "default", "no-such-pod", ["true"])


def test_unreachable_server(tmp_path: Path, cluster: Cluster) -> None:
    path = _with(cluster, tmp_path, cluster_fields={"server": "https://127.0.0.1:1"})
    result = dr("version", "--kubeconfig", str(path), env=clean_env())
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?")


def test_exec_streams_take_the_requests_proxy_decision(cluster: Cluster, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The server is on loopback, which Go never proxies from the environment. websocket-client, left to itself,
    # would send the exec stream to HTTPS_PROXY (its rules have no loopback exemption): one decision for both.
    proxy = Listener()
    try:
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        kube = _kube(_with(cluster, tmp_path))
        assert kube.transport.proxy is None
        with cleanup.scope(lambda _m: None, lambda _f: None):
            pod = running_pod(kube, "default")
            out: list[bytes] = []
            open_exec(kube, "default", pod.name, ["echo", "direct"]).run(stdout=out.append).check("echo")
            pod.delete()
        assert b"".join(out) == b"direct\n"
        assert proxy.received == []
    finally:
        proxy.close()
