"""``build_app``: the aiohttp application of the loopback API server, and ``serve`` to run it.

Routing: discovery, OpenAPI, health and version documents are fixed routes; everything under ``/api/v1``
and ``/apis/GROUP/VERSION`` goes through one generic REST handler (``rest.py``) that works for every
resource the discovery documents list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.cluster.api import discovery, rest
from tests.cluster.api.auth import AuthenticationFailed, ClientCA, User, authenticate, load_tokens
from tests.cluster.api.config import ApiConfig
from tests.cluster.api.errors import ApiError, forbidden_path, internal, storage_error, unauthorized
from tests.cluster.api.etcd_client import EtcdError
from tests.cluster.api.rbac import Policy
from tests.cluster.api.store import Store
from tests.cluster.api.streams import PodStreams
from tests.cluster.api.validation import openapi_for

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("api_config", ApiConfig)
STORE_KEY = web.AppKey("api_store", Store)
STREAMS_KEY = web.AppKey("api_streams", object)
STATE_KEY = web.AppKey("api_state", object)
USER_KEY = web.RequestKey("api_user", User)

# Non-resource URLs of the bootstrap ClusterRoles: system:public-info-viewer (everyone, anonymous too)
# and system:discovery (authenticated users). Admins may read any path.
_PUBLIC_INFO = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})
_DISCOVERY = frozenset({"/api", "/apis", "/openapi", *_PUBLIC_INFO})
_DISCOVERY_PREFIXES = ("/api/", "/apis/", "/openapi/")


def is_resource_request(path: str) -> bool:
    """Whether RequestInfoFactory sees a resource request (authorized by the REST handler)."""
    parts = [p for p in path.split("/") if p]
    return (parts[:1] == ["api"] and len(parts) >= 3) or (parts[:1] == ["apis"] and len(parts) >= 4)


def authorize_path(user: User, method: str, path: str) -> None:
    """RBAC on a non-resource URL: 403 in the real wording when no bootstrap role allows it."""
    if user.is_admin or path in _PUBLIC_INFO:
        return
    if not user.is_anonymous and (path in _DISCOVERY or path.startswith(_DISCOVERY_PREFIXES)):
        return
    raise forbidden_path(user.name, method.lower(), path)


class ServerState:
    """Per-app state: tokens and RBAC policy, re-read when their files change."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._tokens_mtime = -1.0
        self._policy_mtime = -1.0
        self._tokens: dict[str, User] = {}
        self._policy = Policy()
        self.client_ca = ClientCA(config.client_ca_file)

    @property
    def tokens(self) -> dict[str, User]:
        path = self.config.tokens_file
        mtime = path.stat().st_mtime if path and path.exists() else 0.0
        if mtime != self._tokens_mtime:
            self._tokens, self._tokens_mtime = load_tokens(path), mtime
        return self._tokens

    @property
    def policy(self) -> Policy:
        path = self.config.rbac_policy_file
        mtime = path.stat().st_mtime if path and path.exists() else 0.0
        if mtime != self._policy_mtime:
            self._policy, self._policy_mtime = Policy.load(path), mtime
        return self._policy


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode() + b"\n", status=status,
                        headers={"Content-Type": content_type, **(headers or {})})


def error_response(err: ApiError) -> web.Response:
    return json_response(err.status(), status=err.code)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    state: ServerState = request.app[STATE_KEY]  # type: ignore[assignment]
    try:
        # Authentication runs before anything else, as kube-apiserver's filter chain does: presented
        # credentials that do not authenticate are a 401 on every path.
        try:
            user = authenticate(request, state.tokens, state.client_ca)
        except AuthenticationFailed:
            raise unauthorized() from None
        if not is_resource_request(request.path):
            authorize_path(user, request.method, request.path)
        request[USER_KEY] = user
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except EtcdError as exc:  # a storage call the handler did not wrap
        return error_response(storage_error(exc))
    except web.HTTPException:
        raise
    except Exception as exc:  # answer the client as a real server would, and keep the trace in the log
        log.exception("internal error serving %s %s", request.method, request.path)
        return error_response(internal(str(exc)))


def build_app(config: ApiConfig, store: Store, streams: PodStreams) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth], client_max_size=64 * 1024 * 1024)
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[STREAMS_KEY] = streams
    app[STATE_KEY] = ServerState(config)
    docs = discovery.Discovery(config.resolved_api_dir, store.registry, config.git_version)
    docs.add_routes(app, store)
    openapi = openapi_for(config.resolved_api_dir / "openapi-v2.json")
    openapi.registry = store.registry
    openapi.add_routes(app)
    app.router.add_route("*", "/api/{tail:.*}", rest.handle)
    app.router.add_route("*", "/apis/{tail:.*}", rest.handle)
    return app


@dataclass
class RunningServer:
    runner: web.AppRunner
    host: str
    port: int
    scheme: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve(config: ApiConfig, store: Store, streams: PodStreams) -> RunningServer:
    """Start the app on ``config.host:config.port`` (0 = a free port) with TLS when configured."""
    app = build_app(config, store, streams)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    ssl_ctx = config.ssl_context()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx)
    await site.start()
    server = site._server  # aiohttp keeps the listening sockets here; needed to learn port 0's choice
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return RunningServer(runner, config.host, port, "https" if ssl_ctx else "http")
