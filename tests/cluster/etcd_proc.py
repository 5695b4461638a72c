"""Start and stop a scratch etcd on free ports, for tests and the loopback cluster.

The member listens on 127.0.0.1 only, on ports picked by the kernel at start time, so several
developers and test runs can share one machine. TLS is optional: pass ``tls`` to serve clients
over HTTPS with client-certificate verification, as the control-plane members do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.control.ports import free_ports

ETCD_BINARY = "/usr/bin/etcd"


def free_port() -> int:
    """A port that was free a moment ago; the small race is acceptable for tests."""
    return free_ports(1)[0]


@dataclass
class EtcdTLS:
    """Files for a TLS member: serving cert/key and the CA that signs accepted client certs."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass
class EtcdProcess:
    """A running etcd member started by :func:`start_etcd`."""

    name: str
    data_dir: Path
    client_url: str
    peer_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    owns_data_dir: bool = False
    extra_args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, *, remove_data: bool | None = None) -> None:
        """Stop this member (only this pid) and, for a scratch dir, remove its data."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if remove_data if remove_data is not None else self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_etcd(
    data_dir: Path | None = None,
    *,
    name: str = "default",
    tls: EtcdTLS | None = None,
    client_port: int | None = None,
    peer_port: int | None = None,
    initial_cluster: str | None = None,
    initial_cluster_state: str = "new",
    extra_args: list[str] | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
    binary: Path | str = ETCD_BINARY,
) -> EtcdProcess:
    """Start one etcd member and wait until it serves ``/health``.

    Without ``data_dir`` a temporary directory is created and removed again by :meth:`EtcdProcess.stop`.
    ``initial_cluster`` defaults to a single-member cluster of this member.
    """
    owns = data_dir is None
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="etcd-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    # Both chosen while held: two separate choices could hand out one port twice.
    chosen = free_ports(2)
    client_port = client_port or chosen[0]
    peer_port = peer_port or chosen[1]
    scheme = "https" if tls else "http"
    client_url = f"{scheme}://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    args = [
        str(binary),
        f"--name={name}",
        f"--data-dir={data_dir / 'member-data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={initial_cluster or f'{name}={peer_url}'}",
        f"--initial-cluster-state={initial_cluster_state}",
        "--initial-cluster-token=scratch",
        # Keep memory and disk small: tests store few objects.
        "--quota-backend-bytes=268435456",
        "--snapshot-count=10000",
    ]
    if tls:
        args += [
            f"--cert-file={tls.cert_file}",
            f"--key-file={tls.key_file}",
            f"--trusted-ca-file={tls.ca_file}",
            "--client-cert-auth=true",
        ]
    args += extra_args or []
    log_path = log_path or data_dir / "etcd.log"
    env = dict(os.environ)
    # Debian's etcd 3.4 refuses to start on unsupported architectures only; nothing else to set.
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    member = EtcdProcess(name=name, data_dir=data_dir, client_url=client_url, peer_url=peer_url,
                         process=process, log_path=log_path, owns_data_dir=owns, extra_args=extra_args or [])
    if not tls:
        _wait_healthy(member, timeout)
    return member


def _wait_healthy(member: EtcdProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if member.process.poll() is not None:
            raise RuntimeError(f"etcd exited with {member.process.returncode}; log: {member.log_path}")
        try:
            with urllib.request.urlopen(member.client_url + "/health", timeout=2) as resp:
                if b'"true"' in resp.read():
                    return
        except OSError as exc:
            last_error = exc
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        member.stop()
    raise RuntimeError(f"etcd did not become healthy in {timeout}s: {last_error}; log: {member.log_path}")
