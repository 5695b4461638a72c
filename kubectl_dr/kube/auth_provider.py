"""`auth-provider` users: `oidc` through the `kubernetes` package; `gcp` and `azure` refused as kubectl refuses them.

This is the one path that still imports `kubernetes` (lazily, so only these users pay its start-up cost):
the OIDC provider refreshes its id-token with the refresh-token against the issuer, which that package
already does (and writes nowhere: `persist_config=False`), and rewriting an OAuth2 client here would be
more code to get wrong for a deprecated mechanism. kubectl ≥ 1.26 has no gcp and azure providers left and
stops with the messages below; giving the same messages keeps kubectl-dr's behaviour on a kubeconfig the
same as kubectl's (the `kubernetes` package's own gcp loader would need google-auth and a gcloud config).
Only the token comes from there: TLS, the proxy and the requests to the API server stay ours; the issuer is checked
against its idp CA, or certifi's roots when none is given (never unverified, as the package would have it).
"""

from __future__ import annotations

import copy
import tempfile
import threading
from typing import Any

from kubectl_dr.errors import ConfigError, DrError
from kubectl_dr.kube.kubeconfig import ResolvedConfig

REMOVED = {
    "gcp": 'The gcp auth plugin has been removed.\nPlease use the "gke-gcloud-auth-plugin" kubectl/client-go '
           "credential plugin instead.\nSee https://cloud.google.com/blog/products/containers-kubernetes/"
           "kubectl-auth-changes-in-gke for further details",
    "azure": "The azure auth plugin has been removed.\nPlease use the https://github.com/Azure/kubelogin "
             "kubectl/client-go credential plugin instead.\nSee https://kubernetes.io/docs/reference/"
             "access-authn-authz/authentication/#client-go-credential-plugins for further details",
}


def _only_the_provider(resolved: ResolvedConfig) -> dict[str, Any]:
    """The kubeconfig with just the server and the provider: nothing else for the package to load or write."""
    cluster = (resolved.config["clusters"][0] or {}).get("cluster") or {}
    user = (resolved.config["users"][0] or {}).get("user") or {}
    provider = copy.deepcopy(user["auth-provider"])
    config = provider.setdefault("config", {})
    if "idp-certificate-authority" not in config and "idp-certificate-authority-data" not in config:
        # Without an idp CA the package fetches the issuer's discovery document with verification off, then
        # sends the refresh token and client secret to whatever token endpoint it names. client-go checks the
        # issuer against the system roots: so do we (certifi's, as for the API server without a CA).
        import certifi

        config["idp-certificate-authority"] = certifi.where()
    return {
        "clusters": [{"name": "c", "cluster": {"server": cluster.get("server", resolved.server)}}],
        "users": [{"name": "u", "user": {"auth-provider": provider}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


class ProviderSource:
    def __init__(self, resolved: ResolvedConfig) -> None:
        provider = ((resolved.config["users"][0] or {}).get("user") or {}).get("auth-provider") or {}
        name = str(provider.get("name") or "")
        if name in REMOVED:
            raise ConfigError(REMOVED[name])
        if name != "oidc":
            raise ConfigError(f'no Auth Provider found for name "{name}"')
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        self.configuration: Any = k8s_client.Configuration()
        self.lock = threading.Lock()
        try:
            k8s_config.load_kube_config_from_dict(
                _only_the_provider(resolved), context="x", client_configuration=self.configuration,
                persist_config=False, temp_file_path=tempfile.gettempdir(),
            )
        except ConfigException as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None

    def authorization(self) -> str | None:
        with self.lock:
            hook = self.configuration.refresh_api_key_hook
            if hook is not None:
                try:
                    hook(self.configuration)  # renews an expired id-token with the refresh-token
                except Exception as exc:  # the package raises whatever its OAuth2 stack raises
                    raise DrError(f"getting credentials: oidc: {exc}") from None
            token = self.configuration.api_key.get("BearerToken")
            return str(token) if token else None
