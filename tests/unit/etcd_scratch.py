"""A throwaway single-member etcd for tests: the real /usr/bin/etcd on free ports in a temp dir."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def etcd_available() -> bool:
    return os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)


class ScratchEtcd:
    """Start with ``start()``, stop with ``stop()`` (also a context manager)."""

    def __init__(self, workdir: Path, name: str = "scratch") -> None:
        self.workdir = workdir
        self.name = name
        self.data_dir = workdir / f"{name}.etcd"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: http.client.HTTPConnection | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self, timeout: float = 30.0) -> ScratchEtcd:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.proc = subprocess.Popen(
            [
                ETCD,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                self.endpoint,
                "--advertise-client-urls",
                self.endpoint,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"{self.name}={peer}",
                "--initial-cluster-token",
                f"scratch-{os.getpid()}-{self.client_port}",
                # Large values are part of what the tests write (overflow pages).
                "--max-request-bytes",
                str(8 * 1024 * 1024),
                "--quota-backend-bytes",
                str(1024 * 1024 * 1024),
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            probe = self.ctl("endpoint", "health", check=False)
            if probe.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> ScratchEtcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ctl(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [ETCDCTL, "--endpoints", self.endpoint, "--command-timeout", "30s", *args],
            input=input,
            capture_output=True,
            env={**os.environ, "ETCDCTL_API": "3"},
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result

    # Bulk writes go through etcd's own JSON gateway (/v3/kv/...) on one keep-alive connection:
    # thousands of etcdctl processes would take minutes on a shared machine.
    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=60)
        self._http.request("POST", f"/v3/{method}", json.dumps(body), {"Content-Type": "application/json"})
        response = self._http.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd {method} failed: {response.status} {payload[:500]!r}")
        answer: dict[str, Any] = json.loads(payload)
        return answer

    def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        """Put one key; returns the new revision."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        answer = self._call("kv/put", body)
        return int(answer["header"]["revision"])

    def grant_lease(self, ttl: int) -> int:
        answer = self._call("lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    def delete(self, key: bytes, range_end: bytes | None = None) -> int:
        body = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        answer = self._call("kv/deleterange", body)
        return int(answer.get("deleted", 0))

    def compact(self, revision: int) -> None:
        self._call("kv/compaction", {"revision": str(revision), "physical": True})

    def get(self, key: bytes) -> bytes | None:
        answer = self._call("kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def snapshot_save(self, path: Path) -> Path:
        self.ctl("snapshot", "save", str(path))
        return path


def snapshot_status(path: Path) -> dict[str, Any]:
    """``etcdctl snapshot status -w json`` of a file (works offline in etcd 3.4)."""
    result = subprocess.run(
        [ETCDCTL, "snapshot", "status", "-w", "json", str(path)],
        capture_output=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"etcdctl snapshot status failed: {result.stderr.decode(errors='replace')}")
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
