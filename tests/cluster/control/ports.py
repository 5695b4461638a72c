"""Free TCP ports on 127.0.0.1, chosen at run time (other clusters may run on the same machine).

Ports come from below the kernel's ephemeral range, walked in order, never from `bind(("127.0.0.1", 0))`.
A port the kernel hands out for port 0 is closed again before its server binds it, and the kernel may hand
the same port to the next caller in that gap: a cluster once got one port for its API server and, from a
second call, for an etcd member, and never became ready. The kernel also takes ephemeral ports as the source
ports of outgoing connections, which can take a chosen port in that gap too. Below the ephemeral range
neither happens; walking in order gives a port out once per process until the walk wraps around, and each
xdist worker walks a slice of its own, so two workers never choose the same port.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

# Used when the kernel's range cannot be read; Linux's default ephemeral range starts at 32768.
_DEFAULT_EPHEMERAL_LOW = 32768
# Below this the ports of well-known services cluster (and 10250 and friends are Kubernetes' own).
_LOWEST = 12000

_lock = threading.Lock()
_next: int | None = None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _slice() -> tuple[int, int]:
    """This process's ports: [low, high). An xdist worker gets its own slice (PYTEST_XDIST_WORKER=gwN)."""
    low, high = _LOWEST, _ephemeral_low()
    if high - low < 1000:
        raise RuntimeError(f"the kernel's ephemeral ports start at {high}, leaving too few ports below it for "
                           "test servers; raise net.ipv4.ip_local_port_range's low end")
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and workers.isdigit() and int(workers) > 1:
        width = (high - low) // int(workers)
        low += int(worker[2:]) % int(workers) * width
        high = low + width
    return low, high


def _bindable(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:  # something listens there (or on 0.0.0.0), or a connection still holds it
        s.close()
        return None
    return s


def free_ports(count: int) -> list[int]:
    global _next
    low, high = _slice()
    with _lock:
        if _next is None or not low <= _next < high:
            # Processes outside xdist, and a worker's child processes, start their walks at different places.
            _next = low + os.getpid() % (high - low)
        socks: list[socket.socket] = []
        try:
            for _ in range(high - low):
                port, _next = _next, low + (_next + 1 - low) % (high - low)
                s = _bindable(port)
                if s is not None:
                    socks.append(s)
                    if len(socks) == count:
                        return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} free TCP ports on 127.0.0.1 between {low} and {high}")
