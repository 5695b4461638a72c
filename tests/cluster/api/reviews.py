"""Review resources that are answered, never stored: SelfSubjectAccessReview (``kubectl auth can-i``),
SelfSubjectRulesReview, SelfSubjectReview (``kubectl auth whoami``), SubjectAccessReview, TokenReview."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.cluster.api.auth import User
from tests.cluster.api.errors import bad_request
from tests.cluster.api.rbac import Attributes

if TYPE_CHECKING:
    from tests.cluster.api.rest import Context

Json = dict[str, Any]


def _attributes(spec: Json, namespace: str = "") -> Attributes | None:
    ra = spec.get("resourceAttributes")
    if not ra:
        return None
    return Attributes(verb=ra.get("verb", ""), group=ra.get("group", ""), resource=ra.get("resource", ""),
                      subresource=ra.get("subresource", ""), namespace=namespace or ra.get("namespace", ""),
                      name=ra.get("name", ""))


def _decide(ctx: Context, user: User, spec: Json, namespace: str = "") -> Json:
    attrs = _attributes(spec, namespace)
    if attrs is None:
        # Non-resource URLs (/api, /healthz...) are open to every authenticated user here.
        return {"allowed": "system:authenticated" in user.groups or user.is_admin}
    allowed = ctx.state.policy.allowed(user, attrs)
    status: Json = {"allowed": allowed}
    if not allowed:
        status["denied"] = False
    elif user.is_admin:
        status["reason"] = "allowed by admin group"
    return status


async def handle(ctx: Context, body: Any) -> Json:
    if not isinstance(body, dict):
        raise bad_request("the object provided is unrecognized")
    resource = ctx.res.plural
    spec = body.get("spec") or {}
    out: Json = {"kind": ctx.res.kind, "apiVersion": f"{ctx.res.group}/{ctx.info.version}",
                 "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})}}
    user = ctx.user
    if resource == "selfsubjectreviews":
        info: Json = {"username": user.name, "groups": list(user.groups)}
        if user.uid:
            info["uid"] = user.uid
        out["status"] = {"userInfo": info}
        return out
    if resource in ("selfsubjectaccessreviews", "localsubjectaccessreviews", "subjectaccessreviews"):
        if resource != "selfsubjectaccessreviews":
            user = User(spec.get("user", ""), tuple(spec.get("groups") or ()))
        out["spec"] = spec
        out["status"] = _decide(ctx, user, spec, ctx.info.namespace)
        return out
    if resource == "selfsubjectrulesreviews":
        rules = [] if user.is_admin else ctx.state.policy.rules_for(user)
        resource_rules = [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in r}
                          for r in rules if "namespaces" not in r or spec.get("namespace") in r["namespaces"]]
        if user.is_admin:
            resource_rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
        out["spec"] = spec
        out["status"] = {"resourceRules": resource_rules,
                         "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis",
                                                                                     "/apis/*", "/healthz",
                                                                                     "/version"]}],
                         "incomplete": False}
        return out
    # tokenreviews
    token = spec.get("token", "")
    found = ctx.state.tokens.get(token)
    out["spec"] = spec
    out["status"] = ({"authenticated": True, "user": {"username": found.name, "uid": found.uid,
                                                      "groups": list(found.groups)}}
                     if found else {"authenticated": False, "error": "invalid bearer token"})
    return out
