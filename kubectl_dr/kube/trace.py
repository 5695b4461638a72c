"""`-v N` as kubectl has it: at 6 every API request (verb, URL, status, milliseconds), at 8 also the scripts
our pods run, one line each on stderr in klog's header (`I1206 09:31:03.123456   12345 file] …`).

Debugging a broken cluster at night starts here: which request failed, how long each took, what the
pod was told to do. The CLI sets the level and the writer once (`configure`); the kube layer reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

REQUESTS = 6  # kubectl: "Display requested resources" / round_trippers' one line per request
SCRIPTS = 8  # kubectl: "Display HTTP request contents"; here the commands and scripts our pods are given

_level = 0
_write: Callable[[str], None] | None = None


def configure(level: int, write: Callable[[str], None] | None) -> None:
    global _level, _write
    _level, _write = level, write


def enabled(level: int) -> bool:
    return _write is not None and _level >= level


def _line(source: str, text: str) -> None:
    if _write is None:
        return
    now = datetime.now()
    _write(f"I{now:%m%d %H:%M:%S.%f} {os.getpid():>7} {source}] {text}")


def request(method: str, url: str, status: int | None, started: float) -> None:
    """One line per API request, as kubectl's round_trippers.go writes it at -v6."""
    if not enabled(REQUESTS):
        return
    millis = round((time.monotonic() - started) * 1000)
    answer = f"{status} {_reason(status)}" if status else "(no response)"
    _line("request.go", f"{method} {url} {answer} in {millis} milliseconds")


def script(where: str, command: list[str]) -> None:
    """What a pod is told to run (an exec, a container's command): at -v8, with the script's text."""
    if not enabled(SCRIPTS):
        return
    if len(command) >= 3 and command[-2] == "-c":
        head = " ".join(command[:-1])
        _line("script.go", f"{where}: {head} <<'SCRIPT'\n{command[-1].rstrip()}\nSCRIPT")
    else:
        _line("script.go", f"{where}: {' '.join(command)}")


def pod_body(body: Any) -> None:
    """The containers' commands of a Pod we are about to create (at -v8)."""
    if not enabled(SCRIPTS) or not isinstance(body, dict) or body.get("kind") != "Pod":
        return
    name = (body.get("metadata") or {}).get("name") or (body.get("metadata") or {}).get("generateName", "")
    spec = body.get("spec") or {}
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            command = [*(container.get("command") or []), *(container.get("args") or [])]
            if command:
                script(f"pod {name} container {container.get('name')}", [str(c) for c in command])


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 101: "Switching Protocols",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
            410: "Gone", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def _reason(status: int | None) -> str:
    return _REASONS.get(status or 0, "")
