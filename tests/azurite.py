"""Azurite, the Azure Storage emulator (npm: azurite), as the Azure Blob server of the tests.

It listens on 127.0.0.1 with a free port and serves the development account ``devstoreaccount1`` with
its well-known key, addressed path-style (``http://127.0.0.1:PORT/devstoreaccount1``) as Azurite wants.
A missing Azurite skips its tests on a developer's machine and fails them under CI.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.repo.azureclient import DEV_ACCOUNT, DEV_KEY
from tests.s3server import free_port, missing
from tests.serverproc import stop_group, wait_answering


@dataclass
class Azurite:
    endpoint: str  # the account's blob service URL
    process: subprocess.Popen[bytes]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a kubectl-dr process needs to reach this server: account and key, the endpoint in a
        connection string (the standard variables only, no config file)."""
        values = {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}
        values.update(extra or {})
        return values

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint={self.endpoint};")

    def service(self, **options: Any) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, **options)

    def container(self, name: str) -> Any:
        return self.service().get_container_client(name)

    def new_container(self) -> str:
        name = f"t{secrets.token_hex(6)}"
        self.container(name).create_container()
        return name

    def blobs(self, container: str, prefix: str = "") -> dict[str, int]:
        return {b.name: b.size for b in self.container(container).list_blobs(name_starts_with=prefix or None)}

    def uncommitted(self, container: str) -> list[str]:
        """Names that have staged blocks but no committed blob."""
        committed = set(self.blobs(container))
        listed = self.container(container).list_blobs(include=["uncommittedblobs"])
        return sorted(b.name for b in listed if b.name not in committed)


def azurite_binary() -> str | None:
    return shutil.which("azurite-blob")


def start(workdir: Path) -> Azurite:
    binary = azurite_binary()
    if binary is None:
        missing("Azurite is not installed (npm install -g azurite)")
        raise AssertionError("unreachable")
    data = workdir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # --skipApiVersionCheck: the Python SDK may speak a newer service version than this Azurite knows;
    # --loose: Azurite ignores the headers it does not implement instead of failing the request.
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
            "--skipApiVersionCheck", "--loose", "--silent"]
    log = workdir / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Azurite(f"http://127.0.0.1:{port}/{DEV_ACCOUNT}", proc)
    try:
        # No retries inside the probe: the SDK's own first back-off (15 s) would outlast the start itself;
        # wait_answering asks again every 0.3 s.
        wait_answering("azurite", server.endpoint,
                       lambda: next(iter(server.service(retry_total=0).list_containers()), None), proc, log, 60)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: Azurite) -> None:
    stop_group(server.process, 5)


def serve(workdir: Path) -> Iterator[Azurite]:
    server = start(workdir)
    try:
        yield server
    finally:
        stop(server)
