"""API errors rendered as the real ``meta/v1`` ``Status`` bodies.

Wording follows k8s.io/apimachinery/pkg/api/errors so that clients (kubectl, the Python client,
kubectl-dr) see exactly what a real API server would send them.
"""

from __future__ import annotations

from typing import Any, ClassVar

Json = dict[str, Any]


class ApiError(Exception):
    """An error answered to a client as a ``Status`` with ``code``, ``reason`` and ``message``."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Json:
        body: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:  # an empty StatusDetails is sent as "details":{}
            body["details"] = self.details
        body["code"] = self.code
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def qualified(resource: str, group: str) -> str:
    """``pods`` or ``deployments.apps``: how apimachinery prints a GroupResource."""
    return f"{resource}.{group}" if group else resource


def _details(resource: str, group: str, name: str | None = None, **extra: Any) -> Json:
    details: Json = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    details.update(extra)
    return details


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(resource, group)} "{name}" not found',
                    _details(resource, group, name))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(resource, group)} "{name}" already exists',
                    _details(resource, group, name))


def conflict(resource: str, group: str, name: str, reason: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {reason}',
                    _details(resource, group, name))


OBJECT_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"
PRECONDITION_UID = "Precondition failed: UID in precondition: {want}, UID in object meta: {have}"


def forbidden(resource: str, group: str, name: str | None, reason: str) -> ApiError:
    """``pods "x" is forbidden: <reason>`` (``pods is forbidden`` without a name)."""
    what = qualified(resource, group)
    subject = f'{what} "{name}"' if name else what
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {reason}", _details(resource, group, name))


def forbidden_path(user: str, verb: str, path: str) -> ApiError:
    """403 for a non-resource URL (responsewriters.ForbiddenStatusError with an empty GroupResource)."""
    return ApiError(403, "Forbidden", f'forbidden: User "{user}" cannot {verb} path "{path}"', {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


STORAGE_TIMEOUT = "Timeout: request did not complete within requested timeout - context deadline exceeded"


def storage_error(exc: Exception) -> ApiError:
    """What a client gets when etcd fails under the API server.

    No member answers: the request runs into the API server's request timeout, and the timeout filter answers
    504 Timeout (a real server waits for --request-timeout, 60 s by default; this one answers as soon as its
    etcd client gives up). A member answers with an error (no leader, quorum lost: "etcdserver: request timed
    out"): responsewriters.ErrorToAPIStatus passes the text through as a 500 without a reason, which kubectl
    prints as "Error from server: etcdserver: request timed out".
    """
    from tests.cluster.api.etcd_client import EtcdUnavailable

    if isinstance(exc, EtcdUnavailable):
        return ApiError(504, "Timeout", STORAGE_TIMEOUT, {})
    return ApiError(500, "", str(exc))


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """The watch cache's answer to a resourceVersion newer than the storage has (after a restore)."""
    return ApiError(504, "Timeout", f"Timeout: Too large resource version: {requested}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


class FieldError:
    """One ``field.Error`` of apimachinery's validation package."""

    TYPES: ClassVar[dict[str, str]] = {
        "FieldValueInvalid": "Invalid value",
        "FieldValueRequired": "Required value",
        "FieldValueNotSupported": "Unsupported value",
        "FieldValueForbidden": "Forbidden",
        "FieldValueDuplicate": "Duplicate value",
        "FieldValueTooLong": "Too long",
        "FieldValueNotFound": "Not found",
    }

    def __init__(self, reason: str, field: str, detail: str, value: Any = None, *,
                 show_value: bool = True) -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        self.value = value
        self.show_value = show_value and reason in ("FieldValueInvalid", "FieldValueNotSupported",
                                                    "FieldValueDuplicate", "FieldValueNotFound")

    def error_body(self) -> str:
        """``Invalid value: "X": detail`` — the part after ``field: `` in the aggregate message."""
        text = self.TYPES[self.reason]
        if self.show_value:
            text += f": {_go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def cause(self) -> Json:
        return {"reason": self.reason, "message": self.error_body(), "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.error_body()}"


def _go_value(value: Any) -> str:
    """How field.Error prints a value: strings quoted, numbers and bools bare."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 ``Kind "name" is invalid: a: ..., b: ...`` with one cause per field error."""
    messages = [str(e) for e in errors]
    joined = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details: Json = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", f'{kind}{"." + group if group else ""} "{name}" is invalid: {joined}',
                    details)
