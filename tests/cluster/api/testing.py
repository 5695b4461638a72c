"""A self-contained API server for tests: scratch etcd, throwaway PKI, kubeconfig, server thread.

The server runs in its own asyncio loop on a background thread so that blocking clients (the
``kubernetes`` package, kubectl subprocesses) can talk to it from the test thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.cluster.api.bootstrap import bootstrap
from tests.cluster.api.config import ApiConfig, default_api_dir
from tests.cluster.api.crds import serve_stored as serve_stored_crds
from tests.cluster.api.server import RunningServer, serve
from tests.cluster.api.store import Store
from tests.cluster.api.streams import PodStreams
from tests.cluster.control import pki
from tests.cluster.etcd_proc import EtcdProcess, start_etcd

T = TypeVar("T")
KUBECTL = os.environ.get("KUBECTL", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
LIMITED_USER = "dr-limited"
LIMITED_POLICY = {
    "users": {
        LIMITED_USER: [
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"],
             "namespaces": ["default"]},
        ],
    },
}


class ApiHarness:
    def __init__(self, streams: PodStreams, policy: dict[str, Any] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="api-harness-"))
        self.streams = streams
        self.etcd: EtcdProcess = start_etcd(self.dir / "etcd")
        self._write_pki()
        (self.dir / "rbac-policy.yaml").write_text(yaml.safe_dump(policy or LIMITED_POLICY))
        self.config = ApiConfig(cert_file=self.dir / "apiserver.crt", key_file=self.dir / "apiserver.key",
                                client_ca_file=self.dir / "ca.crt", tokens_file=self.dir / "tokens.csv",
                                rbac_policy_file=self.dir / "rbac-policy.yaml", api_dir=default_api_dir())
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.store: Store | None = None
        self.server: RunningServer | None = None
        self.start()

    def _write_pki(self) -> None:
        ca = pki.new_ca("kubernetes")
        pki.write_pair(self.dir, "ca", ca)
        pki.write_pair(self.dir, "apiserver", pki.issue(ca, "kube-apiserver", server=True,
                                                         dns=["localhost"], ips=["127.0.0.1"]))
        pki.write_pair(self.dir, "admin", pki.issue(ca, "kubernetes-admin", orgs=["kubeadm:cluster-admins"],
                                                     client=True))
        pki.write_pair(self.dir, "limited", pki.issue(ca, LIMITED_USER, client=True))
        # A well-formed admin certificate from a CA the server does not trust.
        other_ca = pki.new_ca("another-kubernetes")
        pki.write_pair(self.dir, "foreign", pki.issue(other_ca, "kubernetes-admin",
                                                       orgs=["kubeadm:cluster-admins"], client=True))
        self.token = "harness-token-0123456789"
        (self.dir / "tokens.csv").write_text(f'{self.token},token-user,token-uid,"team-a"\n')

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> None:
        async def up() -> tuple[Store, RunningServer]:
            store = Store.open([self.etcd.client_url], self.config.resolved_api_dir / "discovery")
            await bootstrap(store)
            await serve_stored_crds(store)
            server = await serve(self.config, store, self.streams)
            await bootstrap(store, api_port=server.port)  # port 0: known once listening
            return store, server

        self.store, self.server = self.run(up())
        self.write_kubeconfig()

    def stop_server(self) -> None:
        async def down() -> None:
            if self.server:
                await self.server.stop()
            if self.store:
                await self.store.close()

        self.run(down())
        self.server = self.store = None

    def restart(self) -> None:
        self.stop_server()
        self.start()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def write_kubeconfig(self) -> None:
        d = self.dir
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "admin",
            "clusters": [{"name": "loopback", "cluster": {"server": self.url,
                                                          "certificate-authority": str(d / "ca.crt")}}],
            "users": [
                {"name": "admin", "user": {"client-certificate": str(d / "admin.crt"),
                                           "client-key": str(d / "admin.key")}},
                {"name": "limited", "user": {"client-certificate": str(d / "limited.crt"),
                                             "client-key": str(d / "limited.key")}},
                {"name": "token", "user": {"token": self.token}},
                {"name": "nobody", "user": {"token": "not-a-valid-token"}},
                {"name": "foreign", "user": {"client-certificate": str(d / "foreign.crt"),
                                             "client-key": str(d / "foreign.key")}},
                {"name": "anonymous", "user": {}},
            ],
            "contexts": [{"name": n, "context": {"cluster": "loopback", "user": n, "namespace": "default"}}
                         for n in ("admin", "limited", "token", "nobody", "foreign", "anonymous")],
        }
        self.kubeconfig.write_text(yaml.safe_dump(doc))

    def kubectl(self, *args: str, context: str = "admin", stdin: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["HOME"] = str(self.dir)  # kubectl's discovery cache goes under the scratch dir
        return subprocess.run([KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--context={context}", *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout, env=env)

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                headers: dict[str, str] | None = None, user: str = "admin") -> tuple[int, dict[str, str], bytes]:
        """One raw HTTPS request as ``user``: admin, limited (client certificates), token (the valid bearer
        token), nobody (an unknown bearer token), foreign (a certificate from another CA), anonymous (no
        credentials)."""
        import ssl
        import urllib.error
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        all_headers = {"Accept": "application/json", **(headers or {})}
        if user in ("admin", "limited", "foreign"):
            ctx.load_cert_chain(str(self.dir / f"{user}.crt"), str(self.dir / f"{user}.key"))
        elif user == "token":
            all_headers["Authorization"] = f"Bearer {self.token}"
        elif user == "nobody":
            all_headers["Authorization"] = "Bearer not-a-valid-token"
        elif user != "anonymous":
            raise ValueError(f"unknown harness user {user!r}")
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def client(self, context: str = "admin") -> Any:
        from kubernetes import config

        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), context=context)

    def close(self) -> None:
        try:
            self.stop_server()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.etcd.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
