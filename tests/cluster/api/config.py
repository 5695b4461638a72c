"""``ApiConfig``: everything the API server needs to know besides its Store and PodStreams."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


def default_api_dir() -> Path:
    """The shared reference data (discovery, OpenAPI) next to the repository: ``<repo>/../shared/k8s-api``."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "k8s-api"


@dataclass
class ApiConfig:
    """Fields:

    - ``cert_file``/``key_file``: the serving certificate and key (HTTPS); None serves plain HTTP, which
      only unit tests use;
    - ``client_ca_file``: CA that signs client certificates; they are optional (bearer tokens are the
      alternative) and verified when presented, a failure being a 401 as in kube-apiserver (``auth.py``);
      user = certificate CN, groups = certificate O values;
    - ``tokens_file``: static bearer tokens in kube-apiserver's ``--token-auth-file`` CSV format;
    - ``rbac_policy_file``: per-user rules for non-admin users (format in ``rbac.py``), re-read when changed;
    - ``api_dir``: directory with ``discovery/*.json`` and ``openapi-v2.json`` (the real Kubernetes data);
    - ``host``/``port``: where to listen; port 0 picks a free port (the bound port is on ``serve()``'s result);
    - ``git_version``: what ``/version`` reports;
    - ``watch_bookmark_interval``: seconds between BOOKMARK events on watches that allow them.
    """

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    tokens_file: Path | None = None
    rbac_policy_file: Path | None = None
    api_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    git_version: str = "v1.36.0"
    watch_bookmark_interval: float = 30.0

    @property
    def resolved_api_dir(self) -> Path:
        return self.api_dir or default_api_dir()

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.cert_file or not self.key_file:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file:
            from tests.cluster.api.auth import request_client_certificates

            ctx.load_verify_locations(str(self.client_ca_file))
            ctx.verify_mode = ssl.CERT_OPTIONAL
            # Ask for a certificate without verifying it in the handshake: the x509 authenticator does.
            request_client_certificates(ctx, self.client_ca_file)
        # kubectl/client-go and the Python client speak HTTP/1.1 over TLS for REST and upgrades.
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx
