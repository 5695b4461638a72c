"""The generic REST handler: every verb on every resource, plus the subresources with special meaning
(status, scale, binding, eviction, finalize, and the pod streams delegated to ``PodStreams``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from tests.cluster.api import errors, patch, protobuf, reviews, scale
from tests.cluster.api.errors import ApiError, bad_request
from tests.cluster.api.rbac import Attributes
from tests.cluster.api.requestinfo import RequestInfo, parse
from tests.cluster.api.resources import Resource, not_found_path

if TYPE_CHECKING:
    from tests.cluster.api.auth import User
    from tests.cluster.api.server import ServerState
    from tests.cluster.api.store import Store
    from tests.cluster.api.streams import PodStreams

Json = dict[str, Any]
_STREAM_VERBS = {"exec": "create", "attach": "create", "portforward": "create", "log": "get",
                 "proxy": "get"}
_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"), ("authentication.k8s.io", "selfsubjectreviews"),
            ("authorization.k8s.io", "selfsubjectrulesreviews"),
            ("authorization.k8s.io", "subjectaccessreviews"), ("authentication.k8s.io", "tokenreviews"),
            ("authorization.k8s.io", "localsubjectaccessreviews")}


class Context:
    """Everything a handler needs about one request."""

    def __init__(self, request: web.Request, info: RequestInfo) -> None:
        from tests.cluster.api.server import CONFIG_KEY, STATE_KEY, STORE_KEY, STREAMS_KEY, USER_KEY

        self.request = request
        self.info = info
        self.store: Store = request.app[STORE_KEY]
        self.config = request.app[CONFIG_KEY]
        self.streams: PodStreams = request.app[STREAMS_KEY]  # type: ignore[assignment]
        self.state: ServerState = request.app[STATE_KEY]  # type: ignore[assignment]
        self.user: User = request[USER_KEY]
        self.query = request.query
        self.warnings: list[str] = []

    @property
    def res(self) -> Resource:
        return self.info.resource

    @property
    def namespace(self) -> str | None:
        return self.info.namespace or None

    @property
    def dry_run(self) -> bool:
        return "All" in self.query.getall("dryRun", [])

    def respond(self, body: Any, status: int = 200) -> web.Response:
        from tests.cluster.api.server import json_response

        response = json_response(body, status=status)
        for warning in self.warnings:
            # RFC 7234 warn-text is a quoted-string: escape backslashes and quotes as the apiserver does.
            text = warning.replace("\\", "\\\\").replace('"', '\\"')
            response.headers.add("Warning", f'299 - "{text}"')
        return response


async def handle(request: web.Request) -> web.StreamResponse:
    from tests.cluster.api.server import STORE_KEY

    store: Store = request.app[STORE_KEY]
    info = parse(request.path, request.method, dict(request.query), store.registry)
    ctx = Context(request, info)
    sub = info.subresource
    verb = _STREAM_VERBS.get(sub, info.verb) if sub in _STREAM_VERBS else info.verb
    if sub in _STREAM_VERBS and request.method not in ("GET", "POST"):
        raise _method_not_allowed()
    if sub == "log" and request.method != "GET":
        raise _method_not_allowed()
    allowed_verbs = info.resource.subresources[sub].verbs if sub else info.resource.verbs
    if sub not in _STREAM_VERBS and verb not in allowed_verbs and not (verb == "watch" and "list" in allowed_verbs
                                                                        and "watch" in allowed_verbs):
        raise _method_not_allowed()
    if info.resource.namespaced and info.name and not info.namespace:
        raise not_found_path()
    ctx.state.policy.check(ctx.user, Attributes(verb, info.group, info.resource.plural, sub, info.namespace,
                                                info.name))
    if (info.group, info.resource.plural) in _REVIEWS:
        return ctx.respond(await reviews.handle(ctx, await _body(ctx)), 201)
    if sub in _STREAM_VERBS:
        return await _pod_stream(ctx, sub)
    if sub == "scale":
        return await scale.handle(ctx, await _body(ctx) if request.method in ("PUT", "PATCH") else None)
    if sub == "binding" or (info.resource.plural == "bindings" and not info.group):
        return await _binding(ctx)
    if sub == "eviction":
        return await _eviction(ctx)
    if request.method in ("GET", "HEAD"):
        if info.verb == "watch":
            return await _watch(ctx)
        if info.verb == "list":
            return await _list(ctx)
        obj = await store.get(info.resource.key, ctx.namespace, info.name)
        from tests.cluster.api.tables import table, wants_table

        if wants_table(request):
            return ctx.respond(table(ctx, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}))
        return ctx.respond(_for_version(ctx, obj))
    if request.method == "POST" and not info.name:
        return await _create(ctx)
    if request.method == "PUT" and info.name:
        return await _update(ctx)
    if request.method == "PATCH" and info.name:
        return await _patch(ctx)
    if request.method == "DELETE":
        return await (_delete(ctx) if info.name else _delete_collection(ctx))
    raise _method_not_allowed()


def _method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def _for_version(ctx: Context, obj: Json) -> Json:
    """Objects are stored at the preferred version; requests at another version see that apiVersion."""
    if ctx.info.version != ctx.res.version:
        obj = dict(obj)
        obj["apiVersion"] = f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version
    return obj


async def _body(ctx: Context) -> Any:
    raw = await ctx.request.read()
    if not raw:
        return None
    content_type = ctx.request.content_type
    if content_type == protobuf.MEDIA_TYPE:
        return protobuf.decode(raw)
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the object provided is unrecognized ({exc})") from exc


async def _object_body(ctx: Context) -> Json:
    body = await _body(ctx)
    if not isinstance(body, dict):
        raise bad_request("Object 'Kind' is missing in 'null'" if body is None else
                          "the object provided is unrecognized")
    expected = f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version
    if body.get("apiVersion") and body["apiVersion"] != expected and body.get("kind") == ctx.res.kind:
        raise bad_request(f"the API version in the data ({body['apiVersion']}) does not match the expected API "
                          f"version ({expected})")
    if body.get("kind") and body["kind"] != ctx.res.kind and ctx.info.subresource not in ("status", "finalize"):
        raise bad_request(f"the server could not find the requested resource ({body['kind']} is not "
                          f"{ctx.res.kind})")
    return body


def _validate(ctx: Context, obj: Json) -> None:
    from tests.cluster.api.validation import validate_request_object

    validate_request_object(ctx, obj)


# -------------------------------------------------------------------------------------------- reads
async def _list(ctx: Context) -> web.StreamResponse:
    from tests.cluster.api.tables import wants_table

    limit = int(ctx.query.get("limit", "0") or 0)
    rv = ctx.query.get("resourceVersion", "")
    items, revision, token, remaining = await ctx.store.list_page(
        ctx.res.key, ctx.namespace, label_selector=ctx.query.get("labelSelector"),
        field_selector=ctx.query.get("fieldSelector"), limit=limit,
        continue_token=ctx.query.get("continue") or None,
        resource_version=int(rv) if rv.isdigit() and ctx.query.get("resourceVersionMatch") == "Exact" else 0)
    meta: Json = {"resourceVersion": str(revision)}
    if token:
        meta["continue"] = token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    if wants_table(ctx.request):
        from tests.cluster.api.tables import table

        return ctx.respond(table(ctx, items, meta))
    for item in items:
        item.pop("apiVersion", None)
        item.pop("kind", None)
    api_version = f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version
    return ctx.respond({"kind": f"{ctx.res.kind}List", "apiVersion": api_version, "metadata": meta,
                        "items": items})


async def _watch(ctx: Context) -> web.StreamResponse:
    from tests.cluster.api.tables import table_event, wants_table

    rv_text = ctx.query.get("resourceVersion", "")
    resource_version = int(rv_text) if rv_text.isdigit() else None
    send_initial = ctx.query.get("sendInitialEvents") == "true"
    if send_initial:
        resource_version = None
    bookmarks = ctx.query.get("allowWatchBookmarks") in ("true", "1")
    timeout = float(ctx.query["timeoutSeconds"]) if ctx.query.get("timeoutSeconds") else None
    as_table = wants_table(ctx.request)
    if resource_version:
        # A resourceVersion the storage has not reached (an etcd restored to an older revision, without a
        # bump): the watch cache waits up to 3 s for it, then answers 504 and the client relists.
        deadline = asyncio.get_running_loop().time() + 3.0
        current = await ctx.store.current_revision()
        while resource_version > current and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            current = await ctx.store.current_revision()
        if resource_version > current:
            raise errors.too_large_resource_version(resource_version, current)
    events = ctx.store.watch(ctx.res.key, ctx.namespace, resource_version=resource_version,
                             label_selector=ctx.query.get("labelSelector"),
                             field_selector=ctx.query.get("fieldSelector"))
    response = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})
    await response.prepare(ctx.request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    last_rv = str(resource_version or 0)
    initial_done = not send_initial
    interval = ctx.config.watch_bookmark_interval
    pending: asyncio.Future[tuple[str, Json]] | None = None
    api_version = f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version

    async def write(event_type: str, obj: Json) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())

    def bookmark(annotations: Json | None = None) -> Json:
        meta: Json = {"resourceVersion": last_rv}
        if annotations:
            meta["annotations"] = annotations
        return {"kind": ctx.res.kind, "apiVersion": api_version, "metadata": meta}

    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            wait = interval if (bookmarks or not initial_done) else None
            if not initial_done:
                wait = 0.2
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wait = min(wait, left) if wait is not None else left
            done, _ = await asyncio.wait({pending}, timeout=wait)
            if not done:
                if not initial_done:
                    # The initial ADDED events are out once the iterator blocks on the live stream.
                    initial_done = True
                    if bookmarks or send_initial:
                        await write("BOOKMARK", bookmark({"k8s.io/initial-events-end": "true"}))
                elif bookmarks:
                    await write("BOOKMARK", bookmark())
                continue
            pending = None
            try:
                event_type, obj = done.pop().result()
            except StopAsyncIteration:
                break
            last_rv = obj["metadata"]["resourceVersion"]
            obj = _for_version(ctx, obj)
            await write(event_type, table_event(ctx, obj) if as_table else obj)
    except ApiError as err:
        await write("ERROR", err.status())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if pending is not None:
            pending.cancel()
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


# ------------------------------------------------------------------------------------------- writes
async def _create(ctx: Context) -> web.StreamResponse:
    obj = await _object_body(ctx)
    meta = obj.setdefault("metadata", {})
    if ctx.res.namespaced:
        if not ctx.info.namespace:
            raise not_found_path()
        if meta.get("namespace") and meta["namespace"] != ctx.info.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        meta["namespace"] = ctx.info.namespace
    _validate(ctx, obj)
    created = await ctx.store.create(ctx.res.key, obj, dry_run=ctx.dry_run, warnings=ctx.warnings)
    return ctx.respond(_for_version(ctx, created), 201)


async def _update(ctx: Context) -> web.StreamResponse:
    obj = await _object_body(ctx)
    meta = obj.setdefault("metadata", {})
    if meta.get("name") and meta["name"] != ctx.info.name:
        raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                          f"({ctx.info.name})")
    meta["name"] = ctx.info.name
    if ctx.res.namespaced:
        if meta.get("namespace") and meta["namespace"] != ctx.info.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        meta["namespace"] = ctx.info.namespace
    _validate(ctx, obj)
    sub = ctx.info.subresource or None
    updated = await ctx.store.update(ctx.res.key, obj, subresource=sub, dry_run=ctx.dry_run,
                                     warnings=ctx.warnings)
    return ctx.respond(_for_version(ctx, updated))


def apply_patch(content_type: str, current: Json, body: Any) -> Json:
    if content_type == "application/merge-patch+json":
        result = patch.merge_patch(current, body)
    elif content_type == "application/strategic-merge-patch+json":
        result = patch.strategic_merge_patch(current, body)
    elif content_type == "application/json-patch+json":
        result = patch.json_patch(current, body)
    elif content_type == "application/apply-patch+yaml":
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       "application/json-patch+json, application/merge-patch+json, "
                       "application/strategic-merge-patch+json")
    else:
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types include: "
                       f"application/json-patch+json, application/merge-patch+json, "
                       f"application/strategic-merge-patch+json (got {content_type})")
    if not isinstance(result, dict):
        raise bad_request("the patched object is not an object")
    return result


async def _patch(ctx: Context) -> web.StreamResponse:
    raw = await ctx.request.read()
    content_type = ctx.request.content_type
    if content_type == "application/apply-patch+yaml":
        apply_patch(content_type, {}, None)
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise bad_request(f"error decoding patch: {exc}") from exc
    pinned_rv = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
    sub = ctx.info.subresource or None
    for _ in range(20):
        current = await ctx.store.get(ctx.res.key, ctx.namespace, ctx.info.name)
        patched = apply_patch(content_type, current, body)
        patched.setdefault("metadata", {})
        patched["metadata"]["resourceVersion"] = pinned_rv or current["metadata"]["resourceVersion"]
        patched["metadata"]["name"] = ctx.info.name
        if ctx.res.namespaced:
            patched["metadata"]["namespace"] = ctx.info.namespace
        _validate(ctx, patched)
        try:
            updated = await ctx.store.update(ctx.res.key, patched, subresource=sub, dry_run=ctx.dry_run,
                                             warnings=ctx.warnings)
        except ApiError as err:
            if err.reason == "Conflict" and not pinned_rv:
                continue
            raise
        return ctx.respond(_for_version(ctx, updated))
    raise errors.conflict(ctx.res.plural, ctx.res.group, ctx.info.name, errors.OBJECT_MODIFIED)


async def _delete_options(ctx: Context) -> Json:
    options: Json = {}
    with contextlib.suppress(ApiError):
        body = await _body(ctx)
        if isinstance(body, dict):
            options.update(body)
    if ctx.query.get("gracePeriodSeconds"):
        options["gracePeriodSeconds"] = int(ctx.query["gracePeriodSeconds"])
    if ctx.query.get("propagationPolicy"):
        options["propagationPolicy"] = ctx.query["propagationPolicy"]
    if ctx.query.get("orphanDependents") in ("true", "false"):
        options["orphanDependents"] = ctx.query["orphanDependents"] == "true"
    policy = options.get("propagationPolicy")
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [errors.FieldError(
            "FieldValueNotSupported", "propagationPolicy",
            'supported values: "Foreground", "Background", "Orphan", "nil"', policy)])
    # The deprecated orphanDependents is the same choice: true orphans, false deletes in the background.
    if isinstance(options.get("orphanDependents"), bool) and policy is None:
        options["propagationPolicy"] = "Orphan" if options["orphanDependents"] else "Background"
    return options


async def _delete(ctx: Context) -> web.StreamResponse:
    options = await _delete_options(ctx)
    dry_run = ctx.dry_run or "All" in (options.get("dryRun") or [])
    result = await ctx.store.delete(ctx.res.key, ctx.namespace, ctx.info.name,
                                    grace_period_seconds=options.get("gracePeriodSeconds"),
                                    propagation=options.get("propagationPolicy"),
                                    preconditions=options.get("preconditions"), dry_run=dry_run)
    still_there = bool(result["metadata"].get("deletionTimestamp"))
    if still_there or ctx.res.key in ("pods", "namespaces"):
        # 200 with the object, also when it stays (graceful deletion, finalizers): the handler answers 202
        # only when the deprecated orphanDependents=false asked for cascading deletion.
        accepted = still_there and not dry_run and options.get("orphanDependents") is False
        return ctx.respond(_for_version(ctx, result), 202 if accepted else 200)
    details: Json = {"name": ctx.info.name}
    if ctx.res.group:
        details["group"] = ctx.res.group
    details["kind"] = ctx.res.plural
    details["uid"] = result["metadata"].get("uid", "")
    return ctx.respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": details})


async def _delete_collection(ctx: Context) -> web.StreamResponse:
    options = await _delete_options(ctx)
    items, _ = await ctx.store.list(ctx.res.key, ctx.namespace, label_selector=ctx.query.get("labelSelector"),
                                    field_selector=ctx.query.get("fieldSelector"))
    deleted = []
    for item in items:
        meta = item["metadata"]
        with contextlib.suppress(ApiError):
            deleted.append(await ctx.store.delete(
                ctx.res.key, meta.get("namespace"), meta["name"],
                grace_period_seconds=options.get("gracePeriodSeconds"),
                propagation=options.get("propagationPolicy"), dry_run=ctx.dry_run))
    api_version = f"{ctx.info.group}/{ctx.info.version}" if ctx.info.group else ctx.info.version
    return ctx.respond({"kind": f"{ctx.res.kind}List", "apiVersion": api_version, "metadata": {},
                        "items": deleted})


# ------------------------------------------------------------------------------------ subresources
async def _binding(ctx: Context) -> web.StreamResponse:
    body = await _object_body_any(ctx)
    target = (body.get("target") or {}).get("name")
    name = ctx.info.name or (body.get("metadata") or {}).get("name")
    if not target or not name:
        raise errors.invalid("Binding", "", name or "", [errors.FieldError(
            "FieldValueRequired", "target.name", "")])
    if not ctx.dry_run:
        await ctx.store.bind(ctx.info.namespace, name, target)
    return ctx.respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                       201)


async def _object_body_any(ctx: Context) -> Json:
    body = await _body(ctx)
    if not isinstance(body, dict):
        raise bad_request("the object provided is unrecognized")
    return body


async def _eviction(ctx: Context) -> web.StreamResponse:
    body = await _object_body_any(ctx)
    options = body.get("deleteOptions") or {}
    await ctx.store.delete("pods", ctx.info.namespace, ctx.info.name,
                           grace_period_seconds=options.get("gracePeriodSeconds"), dry_run=ctx.dry_run)
    return ctx.respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                       201)


def _flag(ctx: Context, name: str, default: bool = False) -> bool:
    value = ctx.query.get(name)
    if value is None:
        return default
    return value in ("1", "true", "True", "")


def _pick_container(pod: Json, requested: str | None) -> str:
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    names = [c["name"] for c in spec.get("containers") or []]
    all_names = names + [c["name"] for c in (spec.get("initContainers") or [])
                         + (spec.get("ephemeralContainers") or [])]
    if requested:
        if requested not in all_names:
            raise bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if default in all_names:
        return str(default)
    if len(names) == 1:
        return str(names[0])
    raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                      + (f" or one of the init containers: [{' '.join(all_names[len(names):])}]"
                         if len(all_names) > len(names) else ""))


async def _pod_stream(ctx: Context, sub: str) -> web.StreamResponse:
    if ctx.res.key != "pods":
        raise _method_not_allowed()
    pod = await ctx.store.get("pods", ctx.info.namespace, ctx.info.name)
    if sub == "portforward":
        ports = [int(p) for value in ctx.query.getall("ports", []) for p in value.split(",") if p.strip()]
        return await ctx.streams.portforward(ctx.request, pod, ports)
    container = _pick_container(pod, ctx.query.get("container"))
    if sub == "exec":
        command = ctx.query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        return await ctx.streams.exec(ctx.request, pod, container, list(command), _flag(ctx, "stdin"),
                                      _flag(ctx, "stdout"), _flag(ctx, "stderr"), _flag(ctx, "tty"))
    if sub == "attach":
        return await ctx.streams.attach(ctx.request, pod, container, _flag(ctx, "stdin"), _flag(ctx, "stdout"),
                                        _flag(ctx, "stderr"), _flag(ctx, "tty"))
    if sub == "log":
        tail = ctx.query.get("tailLines")
        since = ctx.query.get("sinceSeconds")
        return await ctx.streams.log(ctx.request, pod, container, _flag(ctx, "follow"),
                                     int(tail) if tail else None, int(since) if since else None,
                                     _flag(ctx, "timestamps"), _flag(ctx, "previous"))
    raise _method_not_allowed()


__all__ = ["Context", "apply_patch", "handle"]
