"""client-go credential plugins (`user.exec` in a kubeconfig), run as kubectl runs them.

- apiVersion `client.authentication.k8s.io/v1` or `v1beta1` (v1alpha1 left kubectl in 1.24); v1 requires
  `interactiveMode`, v1beta1 defaults it to `IfAvailable` (clientcmd's defaulting).
- The plugin gets our environment plus `env`, and `KUBERNETES_EXEC_INFO`: an ExecCredential whose spec says
  whether it may interact and, with `provideClusterInfo`, describes the cluster. It gets our stdin only when it
  may interact (a terminal and a mode other than Never); `Always` without a terminal is an error, as in
  kubectl. Its stderr is the user's: plugins print their prompts and problems there.
- Its answer must be the configured apiVersion with `status.token` or both `clientCertificateData` and
  `clientKeyData`. `expirationTimestamp` makes the answer stale from then on: the next request runs the plugin
  again. A 401 does too (client-go's maybeRefreshCreds): the request that got it is not retried (the user sees
  the 401), the next one runs the plugin first.
- Failures carry client-go's words (`exec: executable X not found`, `… failed with exit code N`), prefixed
  with `getting credentials:` as kubectl prints them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubectl_dr.errors import ConfigError, DrError
from kubectl_dr.kube import tls
from kubectl_dr.kube.tls import ClientCert

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
MODES = ("Never", "IfAvailable", "Always")
INSTALL_HELP = (
    "\n\nIt looks like you are trying to use a client-go credential plugin that is not installed.\n\n"
    "To learn more about this feature, consult the documentation available at:\n"
    "      https://kubernetes.io/docs/reference/access-authn-authz/authentication/#client-go-credential-plugins"
)


@dataclass(frozen=True)
class PluginCredential:
    token: str | None
    cert: ClientCert | None
    expires: float | None  # epoch seconds; None: valid until a new run is forced

    def expired(self, now: float) -> bool:
        return self.expires is not None and now > self.expires


def validate(user_name: str, config: dict[str, Any]) -> None:
    """clientcmd's checks of an exec stanza, with its sentences (before anything runs)."""
    if not config.get("command"):
        raise ConfigError(f"command must be specified for {user_name} to use exec authentication plugin")
    version = config.get("apiVersion")
    if not version:
        raise ConfigError(f"apiVersion must be specified for {user_name} to use exec authentication plugin")
    for entry in config.get("env") or []:
        if not (entry or {}).get("name"):
            raise ConfigError(f"env variable name must be specified for {user_name} to use exec authentication plugin")
    if version not in API_VERSIONS:
        raise ConfigError(f"exec plugin: invalid apiVersion {json.dumps(version)}")
    mode = mode_of(config)
    if not mode:
        raise ConfigError(f"interactiveMode must be specified for {user_name} to use exec authentication plugin")
    if mode not in MODES:
        raise ConfigError(f"invalid interactiveMode for {user_name}: {json.dumps(mode)}")


def mode_of(config: dict[str, Any]) -> str:
    mode = str(config.get("interactiveMode") or "")
    if not mode and config.get("apiVersion") != "client.authentication.k8s.io/v1":
        return "IfAvailable"  # clientcmd's default for v1beta1, kept for old kubeconfigs
    return mode


def cluster_info(cluster: dict[str, Any], ca_pem: str | None) -> dict[str, Any]:
    """`spec.cluster` of the ExecCredential (provideClusterInfo): the cluster as the plugin should reach it."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    if cluster.get("tls-server-name"):
        info["tls-server-name"] = cluster["tls-server-name"]
    if tls.insecure_flag(cluster):
        info["insecure-skip-tls-verify"] = True
    if ca_pem:
        info["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    if cluster.get("proxy-url"):
        info["proxy-url"] = cluster["proxy-url"]
    for extension in cluster.get("extensions") or []:
        if (extension or {}).get("name") == "client.authentication.k8s.io/exec":
            info["config"] = extension.get("extension")
    return info


class ExecPlugin:
    """One user's plugin: runs it when there is no credential yet or the last one expired."""

    def __init__(self, config: dict[str, Any], cluster: dict[str, Any] | None,
                 *, environ: Mapping[str, str] | None = None,
                 stdin_is_terminal: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.command = str(config["command"])
        self.version = str(config["apiVersion"])
        self.mode = mode_of(config)
        self.cluster = cluster if config.get("provideClusterInfo") else None
        self.environ = environ
        self.stdin_is_terminal = stdin_is_terminal or (lambda: sys.stdin is not None and sys.stdin.isatty())
        self.lock = threading.Lock()
        self.cached: PluginCredential | None = None
        self.runs = 0

    def credential(self) -> PluginCredential:
        with self.lock:
            if self.cached is None or self.cached.expired(time.time()):
                self.cached = self._run()
            return self.cached

    def forget(self, used: PluginCredential | None) -> None:
        """The server refused `used`: the next request runs the plugin (unless another thread already did)."""
        with self.lock:
            if used is not None and self.cached is used:
                self.cached = None

    def _interactive(self) -> bool:
        if self.mode == "Never":
            return False
        terminal = self.stdin_is_terminal()
        if self.mode == "Always" and not terminal:
            raise DrError("getting credentials: exec plugin cannot support interactive mode: "
                          "standard input is not a terminal")
        return terminal

    def _run(self) -> PluginCredential:
        interactive = self._interactive()
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        info = {"kind": "ExecCredential", "apiVersion": self.version, "spec": spec}
        env = dict(os.environ if self.environ is None else self.environ)
        env.update({str(e["name"]): str(e.get("value", "")) for e in self.config.get("env") or []})
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        args = [self.command, *(str(a) for a in self.config.get("args") or [])]
        self.runs += 1
        try:
            # stderr stays ours (the user's terminal); stdin only when the plugin may ask the user something.
            returncode, stdout = _run_plugin(args, env, stdin=None if interactive else subprocess.DEVNULL)
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            hint = self.config.get("installHint")
            raise DrError(f"getting credentials: exec: executable {self.command} not found{INSTALL_HELP}"
                          + (f"\n\n{hint}" if hint else "")) from None
        except OSError as exc:
            raise DrError(f"getting credentials: exec: {exc}") from None
        if returncode != 0:
            code = returncode if returncode > 0 else -1  # Go's ExitCode() is -1 for a signal
            raise DrError(f"getting credentials: exec: executable {self.command} failed with exit code {code}")
        return self._parse(stdout)

    def _parse(self, stdout: bytes) -> PluginCredential:
        try:
            answer = json.loads(stdout)
        except ValueError as exc:
            raise DrError(f"getting credentials: decoding stdout: {exc}") from None
        if not isinstance(answer, dict):
            raise DrError("getting credentials: decoding stdout: not an ExecCredential object")
        if answer.get("apiVersion") != self.version:
            raise DrError(f"getting credentials: exec plugin is configured to use API version {self.version}, "
                          f"plugin returned version {answer.get('apiVersion') or ''}")
        status = answer.get("status")
        if not isinstance(status, dict):
            raise DrError("getting credentials: exec plugin didn't return a status field")
        token = str(status.get("token") or "") or None
        cert_data, key_data = status.get("clientCertificateData"), status.get("clientKeyData")
        if not token and not cert_data and not key_data:
            raise DrError("getting credentials: exec plugin didn't return a token or cert/key pair")
        if bool(cert_data) != bool(key_data):
            raise DrError("getting credentials: exec plugin returned only certificate or key, not both")
        cert = ClientCert(str(cert_data).encode(), str(key_data).encode()) if cert_data else None
        return PluginCredential(token, cert, _timestamp(status.get("expirationTimestamp")))


PLUGIN_GRACE = 2.0  # after an interruption: the plugin's own time to end (and put the terminal back)


def _run_plugin(args: list[str], env: dict[str, str], *, stdin: int | None) -> tuple[int, bytes]:
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stdin=stdin) as process:
        try:
            stdout, _ = process.communicate()
        except BaseException:
            _end(process)
            raise
        return process.returncode, stdout


def _end(process: subprocess.Popen[bytes]) -> None:
    """An interrupted run's plugin. subprocess.run would SIGKILL it at once; one that is asking for a password
    has the terminal without echo then, and nothing puts it back. A Ctrl-C from the terminal reached the plugin
    too (same process group): it gets time to end on its own, then SIGTERM, and SIGKILL only after that. A
    second interruption meanwhile still ends it (the finally)."""
    try:
        for ask, grace in ((None, PLUGIN_GRACE), (process.terminate, 1.0)):
            if ask is not None:
                ask()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
                return
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise DrError(f"getting credentials: decoding stdout: invalid expirationTimestamp {value!r}") from None
