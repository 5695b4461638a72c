"""Authorization: admins may do everything; other users get the rules of a small YAML policy file.

Policy format (the cluster writes it as ``rbac-policy.yaml``)::

    users:                     # or "groups:", keyed by group name
      dr-limited:
        - apiGroups: [""]          # "" is the core group, "*" any group
          resources: [pods, pods/log, pods/exec]   # "*" any, "pods/*" any subresource of pods
          verbs: [get, list, watch, create]        # "*" any verb
          namespaces: [default]    # optional; without it the rule also covers cluster-scoped resources
          resourceNames: [x]       # optional

Every authenticated user may read discovery/OpenAPI/health and create selfsubjectaccessreviews,
selfsubjectrulesreviews and selfsubjectreviews (what the system:basic-user and system:discovery roles allow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.api.auth import User
from tests.cluster.api.errors import ApiError, forbidden


@dataclass(frozen=True)
class Attributes:
    """What a request does, as the real authorizer sees it (authorizer.AttributesRecord)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


_ALWAYS_ALLOWED = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}


class Policy:
    def __init__(self, users: dict[str, list[dict[str, Any]]] | None = None,
                 groups: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.users = users or {}
        self.groups = groups or {}

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        if path is None or not path.exists():
            return cls()
        doc = yaml.safe_load(path.read_text()) or {}
        return cls(doc.get("users") or {}, doc.get("groups") or {})

    def rules_for(self, user: User) -> list[dict[str, Any]]:
        rules = list(self.users.get(user.name, []))
        for group in user.groups:
            rules += self.groups.get(group, [])
        return rules

    def allowed(self, user: User, attrs: Attributes) -> bool:
        if user.is_admin:
            return True
        if (attrs.group, attrs.resource) in _ALWAYS_ALLOWED and attrs.verb == "create":
            return True
        return any(_matches(rule, attrs) for rule in self.rules_for(user))

    def check(self, user: User, attrs: Attributes) -> None:
        if not self.allowed(user, attrs):
            raise denied(user, attrs)


def _matches(rule: dict[str, Any], attrs: Attributes) -> bool:
    groups = rule.get("apiGroups", [""])
    if "*" not in groups and attrs.group not in groups:
        return False
    verbs = rule.get("verbs", [])
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    full = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = rule.get("resources", [])
    if not ("*" in resources or full in resources
            or (attrs.subresource and f"{attrs.resource}/*" in resources)
            or (attrs.subresource and f"*/{attrs.subresource}" in resources)):
        return False
    namespaces = rule.get("namespaces")
    if namespaces is not None and (not attrs.namespace or attrs.namespace not in namespaces):
        return False
    names = rule.get("resourceNames")
    return not (names and attrs.name not in names)


def denied(user: User, attrs: Attributes) -> ApiError:
    """403 with the RBAC authorizer's wording."""
    full = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    reason = f'User "{user.name}" cannot {attrs.verb} resource "{full}" in API group "{attrs.group}" {scope}'
    return forbidden(attrs.resource, attrs.group, attrs.name or None, reason)
