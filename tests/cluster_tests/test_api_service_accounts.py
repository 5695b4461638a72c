"""ServiceAccount admission and the namespace's default ServiceAccount, through raw HTTP (no controllers run)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.cluster.api.testing import ApiHarness


def _pod(meta: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec}}


def test_new_namespace_has_its_default_service_account_at_once(api: ApiHarness) -> None:
    code, _, _ = api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "fresh"}})
    assert code == 201
    code, _, body = api.request("GET", "/api/v1/namespaces/fresh/serviceaccounts/default")
    assert code == 200 and json.loads(body)["metadata"]["namespace"] == "fresh"
    code, _, body = api.request("POST", "/api/v1/namespaces/fresh/pods", _pod({"name": "p"}))
    assert code == 201
    spec = json.loads(body)["spec"]
    assert (spec["serviceAccountName"], spec["serviceAccount"]) == ("default", "default")


def test_pod_naming_a_missing_account_is_forbidden_with_the_plugins_words(api: ApiHarness) -> None:
    code, _, body = api.request("POST", "/api/v1/namespaces/default/pods",
                                _pod({"name": "ghostly"}, serviceAccountName="ghost"))
    assert code == 403
    assert json.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "ghostly" is forbidden: error looking up service account default/ghost: '
                   'serviceaccount "ghost" not found',
        "reason": "Forbidden", "details": {"name": "ghostly", "kind": "pods"}, "code": 403}
    # A generateName-only pod is named by its prefix, as admission.NewForbidden names it; dry runs are refused too.
    code, _, body = api.request("POST", "/api/v1/namespaces/default/pods?dryRun=All",
                                _pod({"generateName": "web-7d9f-"}, serviceAccountName="ghost"))
    assert code == 403
    assert json.loads(body)["message"].startswith('pods "web-7d9f-" is forbidden: error looking up service account')
    code, _, _ = api.request("GET", "/api/v1/namespaces/default/pods/ghostly")
    assert code == 404


def test_missing_default_account_is_waited_for_then_refused(api: ApiHarness) -> None:
    code, _, _ = api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "bare"}})
    assert code == 201
    assert api.request("DELETE", "/api/v1/namespaces/bare/serviceaccounts/default")[0] == 200
    started = time.monotonic()
    code, _, body = api.request("POST", "/api/v1/namespaces/bare/pods", _pod({"name": "p"}))
    waited = time.monotonic() - started
    assert code == 403
    assert json.loads(body)["message"] == ('pods "p" is forbidden: error looking up service account bare/default: '
                                           'serviceaccount "default" not found')
    assert waited >= 0.9  # ten lookups 100-200 ms apart: the plugin waits for the controller to make it
    # A missing namespace is NamespaceLifecycle's answer, before the account is looked up.
    code, _, body = api.request("POST", "/api/v1/namespaces/nowhere/pods", _pod({"name": "p"}))
    assert code == 404 and json.loads(body)["message"] == 'namespaces "nowhere" not found'
