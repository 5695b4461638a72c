"""Authentication and non-resource authorization as kube-apiserver does them.

The authentication filter runs before everything: credentials that are presented and do not
authenticate (an unknown bearer token, a client certificate from another CA) are a 401 on every path,
/version and /healthz included. Only a request without credentials is ``system:anonymous``, which RBAC's
system:public-info-viewer lets read /healthz, /livez, /readyz, /version and /version/ and nothing else.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.api.testing import ApiHarness

UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
PUBLIC = ("/version", "/version/", "/healthz", "/livez", "/readyz")
EVERY = (*PUBLIC, "/healthz?verbose", "/openapi/v2", "/openapi/v3", "/api", "/api/v1", "/apis",
         "/apis/apps/v1", "/api/v1/namespaces/default/pods", "/apis/apps/v1/deployments", "/no/such/path")




@pytest.mark.parametrize("user", ["nobody", "foreign"])
@pytest.mark.parametrize("path", EVERY)
def test_credentials_that_do_not_authenticate_are_401_everywhere(api: ApiHarness, user: str, path: str) -> None:
    status, headers, raw = api.request("GET", path, user=user)
    assert status == 401, raw
    assert json.loads(raw) == UNAUTHORIZED
    assert headers["Content-Type"] == "application/json"


def test_foreign_certificate_is_401_not_a_failed_handshake(api: ApiHarness) -> None:
    """A real server asks for a certificate without verifying it in TLS, and refuses it in HTTP."""
    status, _, raw = api.request("POST", "/api/v1/namespaces/default/configmaps",
                                 {"metadata": {"name": "x"}}, user="foreign")
    assert (status, json.loads(raw)) == (401, UNAUTHORIZED)
    with pytest.raises(ApiException) as err:
        client.VersionApi(api.client("foreign")).get_code()
    assert err.value.status == 401


@pytest.mark.parametrize("path", PUBLIC)
def test_anonymous_reads_public_info(api: ApiHarness, path: str) -> None:
    status, _, raw = api.request("GET", path, user="anonymous")
    assert status == 200, raw
    if path.startswith("/version"):
        assert json.loads(raw)["gitVersion"] == api.config.git_version
    else:
        assert raw == b"ok"


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/openapi/v2", "/no/such/path"])
def test_anonymous_is_forbidden_other_paths(api: ApiHarness, path: str) -> None:
    status, _, raw = api.request("GET", path, user="anonymous")
    assert status == 403
    assert json.loads(raw) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": f'forbidden: User "system:anonymous" cannot get path "{path}"',
                               "reason": "Forbidden", "details": {}, "code": 403}


def test_anonymous_resource_request_is_forbidden_by_rbac(api: ApiHarness) -> None:
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/pods", user="anonymous")
    assert status == 403
    assert json.loads(raw)["message"] == ('pods is forbidden: User "system:anonymous" cannot list resource '
                                          '"pods" in API group "" in the namespace "default"')


def test_authenticated_users_read_discovery_but_not_other_paths(api: ApiHarness) -> None:
    for path in ("/api", "/apis/apps/v1", "/openapi/v2", "/version/"):
        status, _, raw = api.request("GET", path, user="limited")
        assert status == 200, (path, raw)
    status, _, raw = api.request("GET", "/metrics", user="limited")
    assert status == 403
    assert json.loads(raw)["message"] == 'forbidden: User "dr-limited" cannot get path "/metrics"'


def test_first_authenticator_that_succeeds_wins(api: ApiHarness) -> None:
    # union.New(x509, token): a valid certificate wins over a bad token, a valid token over a bad certificate.
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/pods", user="admin",
                                 headers={"Authorization": "Bearer not-a-valid-token"})
    assert status == 200, raw
    status, _, raw = api.request("GET", "/api/v1/namespaces/default/pods", user="foreign",
                                 headers={"Authorization": f"Bearer {api.token}"})
    assert status == 403
    assert 'User "token-user" cannot list' in json.loads(raw)["message"]


def test_version_with_trailing_slash(api: ApiHarness) -> None:
    plain = json.loads(api.request("GET", "/version")[2])
    assert json.loads(api.request("GET", "/version/")[2]) == plain
    # The Python client's VersionApi asks for /version/.
    info = client.VersionApi(api.client()).get_code()
    assert info.git_version == plain["gitVersion"]


@pytest.mark.parametrize("context", ["nobody", "foreign"])
def test_kubectl_with_credentials_that_do_not_authenticate(api: ApiHarness, context: str) -> None:
    # client-go always sends its certificate (GetClientCertificate), so the foreign one reaches the server.
    for args in (("version", "-o", "json"), ("get", "pods")):
        result = api.kubectl(*args, context=context)
        assert result.returncode == 1
        assert "error: You must be logged in to the server (the server has asked for the client to provide " \
               "credentials)" in result.stderr
