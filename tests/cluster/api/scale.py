"""The ``scale`` subresource: ``autoscaling/v1`` ``Scale`` views of deployments, statefulsets,
replicasets and replicationcontrollers. ``kubectl scale`` PATCHes it with a merge patch of
``spec.replicas`` (or GETs and PUTs it with ``--current-replicas``/``--resource-version``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.cluster.api import errors
from tests.cluster.api.errors import ApiError, FieldError

if TYPE_CHECKING:
    from tests.cluster.api.rest import Context

Json = dict[str, Any]


def selector_string(selector: Json | None) -> str:
    """metav1.LabelSelector → the string form Scale.status.selector carries."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(sorted(parts))


def to_scale(obj: Json) -> Json:
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = spec.get("selector")
    if obj.get("kind") == "ReplicationController":
        selector_text = ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
    else:
        selector_text = selector_string(selector)
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": int(spec.get("replicas", 0))},
        "status": {"replicas": int(status.get("replicas", 0)), "selector": selector_text},
    }


async def handle(ctx: Context, body: Any) -> web.StreamResponse:
    from tests.cluster.api.rest import apply_patch

    key, ns, name = ctx.res.key, ctx.namespace, ctx.info.name
    method = ctx.request.method
    if method == "GET":
        return ctx.respond(to_scale(await ctx.store.get(key, ns, name)))
    for _ in range(20):
        current = await ctx.store.get(key, ns, name)
        scale = to_scale(current)
        if method == "PATCH":
            wanted = apply_patch(ctx.request.content_type, scale, body)
        elif method == "PUT":
            if not isinstance(body, dict):
                raise errors.bad_request("the object provided is unrecognized")
            wanted = body
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                           "resource")
        replicas = (wanted.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [FieldError(
                "FieldValueInvalid", "spec.replicas", "must be greater than or equal to 0", replicas)])
        pinned = (wanted.get("metadata") or {}).get("resourceVersion") if method == "PUT" else None
        if pinned and pinned != current["metadata"]["resourceVersion"]:
            raise errors.conflict(ctx.res.plural, ctx.res.group, name, errors.OBJECT_MODIFIED)
        current["spec"]["replicas"] = replicas
        try:
            updated = await ctx.store.update(key, current, dry_run=ctx.dry_run)
        except ApiError as err:
            if err.reason == "Conflict" and not pinned:
                continue
            raise
        return ctx.respond(to_scale(updated))
    raise errors.conflict(ctx.res.plural, ctx.res.group, name, errors.OBJECT_MODIFIED)
