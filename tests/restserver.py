"""restic's REST server (Debian 13: restic-rest-server 0.13) as the rest: backend of the tests.

It listens on 127.0.0.1 with a free port, keeps its repositories in a temp dir, and asks for basic auth
from one user in an htpasswd file (a {SHA} entry: rest-server reads it, and Python writes it without a
bcrypt library). A missing server skips its tests on a developer's machine and fails them under CI.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.s3server import free_port, missing
from tests.serverproc import stop_group, wait_answering

USER = "backup"


@dataclass
class RestServer:
    host: str  # 127.0.0.1:PORT
    password: str
    data: Path
    process: subprocess.Popen[bytes]

    def url(self, path: str, *, user: str = USER, password: str | None = None) -> str:
        """restic's repository string for a repository at PATH on this server, credentials in the URL."""
        secret = self.password if password is None else password
        return f"rest:http://{user}:{secret}@{self.host}/{path.strip('/')}/"

    def new_path(self) -> str:
        return f"r{secrets.token_hex(6)}"


def binary() -> str | None:
    return shutil.which("restic-rest-server")


def start(workdir: Path, *extra: str) -> RestServer:
    """`extra`: more flags, such as --append-only."""
    found = binary()
    if found is None:
        missing("restic-rest-server is not installed (apt-get install -t trixie restic-rest-server)")
        raise AssertionError("unreachable")
    password = secrets.token_hex(8)
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{USER}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}\n")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    log = workdir / "rest-server.log"
    with open(log, "wb") as out:
        args = [found, "--path", str(data), "--listen", host, "--htpasswd-file", str(htpasswd), *extra]
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = RestServer(host, password, data, proc)

    def probe() -> None:
        try:
            urllib.request.urlopen(f"http://{host}/", timeout=2)
        except urllib.error.HTTPError as exc:  # 401 without credentials: it is up and asking for them
            if exc.code != 401:
                raise

    try:
        wait_answering("rest-server", host, probe, proc, log, 30)
    except BaseException:
        stop_group(proc, 5)
        raise
    return server


def serve(workdir: Path, *extra: str) -> Iterator[RestServer]:
    server = start(workdir, *extra)
    try:
        yield server
    finally:
        stop_group(server.process, 5)
