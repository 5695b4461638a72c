"""The ``PodStreams`` protocol: how the API server hands pod streams (exec, attach, log, port-forward)
to the node side after authentication, authorization and lookup of the pod."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

Json = dict[str, Any]


class PodStreams(Protocol):
    async def exec(self, request: web.Request, pod: Json, container: str, command: list[str],
                   stdin: bool, stdout: bool, stderr: bool, tty: bool) -> web.StreamResponse: ...

    async def attach(self, request: web.Request, pod: Json, container: str, stdin: bool, stdout: bool,
                     stderr: bool, tty: bool) -> web.StreamResponse: ...

    async def log(self, request: web.Request, pod: Json, container: str, follow: bool,
                  tail_lines: int | None, since_seconds: int | None, timestamps: bool,
                  previous: bool) -> web.StreamResponse: ...

    async def portforward(self, request: web.Request, pod: Json, ports: list[int]) -> web.StreamResponse: ...
