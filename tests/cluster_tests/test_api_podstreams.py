"""Routing of pod subresources to PodStreams: authorization (create on pods/exec, get on pods/log),
pod lookup, container choice, and the parameters handed over. The PodStreams here answers with fixed text
only to observe the routing; the cluster's real streams live with the kubelets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.cluster.api.testing import ApiHarness

Json = dict[str, Any]


class EchoStreams:
    """Records each call and answers like a kubelet would, with the call's parameters as the output."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Json]] = []

    async def exec(self, request: web.Request, pod: Json, container: str, command: list[str], stdin: bool,
                   stdout: bool, stderr: bool, tty: bool) -> web.StreamResponse:
        self.calls.append(("exec", pod["metadata"]["name"], {"container": container, "command": command,
                                                             "stdin": stdin, "tty": tty}))
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        await ws.send_bytes(b"\x01" + f"{container}:{' '.join(command)}\n".encode())
        await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
        await ws.close()
        return ws

    async def attach(self, request: web.Request, pod: Json, container: str, stdin: bool, stdout: bool,
                     stderr: bool, tty: bool) -> web.StreamResponse:
        raise web.HTTPNotImplemented()

    async def log(self, request: web.Request, pod: Json, container: str, follow: bool, tail_lines: int | None,
                  since_seconds: int | None, timestamps: bool, previous: bool) -> web.StreamResponse:
        self.calls.append(("log", pod["metadata"]["name"], {"container": container, "tail": tail_lines,
                                                            "follow": follow}))
        return web.Response(text=f"log of {container} tail={tail_lines}\n", content_type="text/plain")

    async def portforward(self, request: web.Request, pod: Json, ports: list[int]) -> web.StreamResponse:
        self.calls.append(("portforward", pod["metadata"]["name"], {"ports": ports}))
        return web.Response(status=400, text="not in this test\n")


@pytest.fixture(scope="module")
def streams() -> EchoStreams:
    return EchoStreams()


@pytest.fixture(scope="module")
def api(streams: EchoStreams) -> Iterator[ApiHarness]:
    policy = {"users": {"dr-limited": [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}}
    harness = ApiHarness(streams, policy)
    try:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two"}, "spec": {"containers": [
            {"name": "app", "image": "busybox"}, {"name": "side", "image": "busybox"}]}}
        status, _, body = harness.request("POST", "/api/v1/namespaces/default/pods", pod)
        assert status == 201, body
        yield harness
    finally:
        harness.close()


def test_kubectl_exec_reaches_streams(api: ApiHarness, streams: EchoStreams) -> None:
    result = api.kubectl("exec", "two", "-c", "side", "--", "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "side:echo hi\n"
    assert streams.calls[-1] == ("exec", "two", {"container": "side", "command": ["echo", "hi"],
                                                 "stdin": False, "tty": False})


def test_exec_without_container_on_multi_container_pod(api: ApiHarness) -> None:
    status, _, body = api.request("POST", "/api/v1/namespaces/default/pods/two/exec?command=true&stdout=1", b"")
    assert status == 400
    assert json.loads(body)["message"] == "a container name must be specified for pod two, choose one of: [app side]"


def test_exec_needs_create_on_pods_exec(api: ApiHarness) -> None:
    status, _, body = api.request("GET", "/api/v1/namespaces/default/pods/two/exec?command=true&container=app",
                                  user="limited")
    assert status == 403
    assert json.loads(body)["message"] == (
        'pods "two" is forbidden: User "dr-limited" cannot create resource "pods/exec" in API group "" in the '
        'namespace "default"')


def test_logs_route_with_parameters(api: ApiHarness, streams: EchoStreams) -> None:
    result = api.kubectl("logs", "two", "-c", "app", "--tail=5", context="limited")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "log of app tail=5\n"
    assert streams.calls[-1] == ("log", "two", {"container": "app", "tail": 5, "follow": False})


def test_streams_on_missing_pod_is_404(api: ApiHarness) -> None:
    status, _, body = api.request("GET", "/api/v1/namespaces/default/pods/ghost/log")
    assert status == 404
    assert json.loads(body)["message"] == 'pods "ghost" not found'


def test_websocket_exec_from_python(api: ApiHarness) -> None:
    """The kubernetes client's websocket exec negotiates a channel protocol with the same handler."""
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(api.client())
    out = stream(core.connect_get_namespaced_pod_exec, "two", "default", container="app",
                 command=["id"], stdout=True, stderr=True, stdin=False, tty=False)
    assert out == "app:id\n"
