"""Object name validation with apimachinery's exact messages (pkg/util/validation)."""

from __future__ import annotations

import re

from tests.cluster.api.errors import FieldError

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    f"validation is '{_DNS1123_SUBDOMAIN}')"
)
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    f"validation is '{_DNS1123_LABEL}')"
)

# Resources whose names must be DNS-1123 labels rather than subdomains (ValidateNamespaceName,
# ValidateServiceName...).
_LABEL_NAMED = {"namespaces", "services"}


def validate_name(resource: str, name: str, field: str = "metadata.name") -> list[FieldError]:
    if resource in _LABEL_NAMED:
        errors = []
        if len(name) > 63:
            errors.append(FieldError("FieldValueInvalid", field, "must be no more than 63 characters", name))
        if not re.fullmatch(_DNS1123_LABEL, name):
            errors.append(FieldError("FieldValueInvalid", field, DNS1123_LABEL_MSG, name))
        return errors
    if resource in ("nodes", "rolebindings.rbac.authorization.k8s.io", "roles.rbac.authorization.k8s.io",
                    "clusterroles.rbac.authorization.k8s.io",
                    "clusterrolebindings.rbac.authorization.k8s.io"):
        # Path-segment names (RBAC) and node names are looser; reject only what breaks a URL path.
        if name in (".", "..") or "/" in name or "%" in name:
            return [FieldError("FieldValueInvalid", field, "may not contain '/' or '%'", name)]
        return []
    errors = []
    if len(name) > 253:
        errors.append(FieldError("FieldValueInvalid", field, "must be no more than 253 characters", name))
    if not re.fullmatch(_DNS1123_SUBDOMAIN, name):
        errors.append(FieldError("FieldValueInvalid", field, DNS1123_SUBDOMAIN_MSG, name))
    return errors
