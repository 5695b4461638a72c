"""The test servers' ports: never handed out twice by one process, never in the kernel's ephemeral range."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.cluster.control import ports


def test_a_process_never_gets_the_same_port_twice() -> None:
    # A cluster once got its API server's port and an etcd member's port from two calls, the same port twice.
    chosen = [p for _ in range(200) for p in ports.free_ports(3)]
    assert len(set(chosen)) == len(chosen) == 600
    assert all(ports._LOWEST <= p < ports._ephemeral_low() for p in chosen)


def test_a_port_in_use_is_passed_over() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    port = ports._slice()[1] - 500  # in this process's slice (an xdist worker walks only its own)
    try:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        ports._next = port  # the walk's next port is the one that is taken
        assert ports.free_ports(1) == [port + 1]
    finally:
        taken.close()
        ports._next = None


def test_xdist_workers_walk_slices_of_their_own() -> None:
    code = "from tests.cluster.control.ports import free_ports; print(*free_ports(50))"
    seen: list[set[int]] = []
    for worker in ("gw0", "gw1", "gw2"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "3"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seen.append({int(p) for p in out.stdout.split()})
    assert all(len(s) == 50 for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    width = (ports._ephemeral_low() - ports._LOWEST) // 3
    for i, s in enumerate(seen):
        assert all(ports._LOWEST + i * width <= p < ports._LOWEST + (i + 1) * width for p in s)
