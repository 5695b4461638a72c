"""Free TCP ports on 127.0.0.1, chosen at run time (other clusters may run on the same machine)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the same port is not handed out twice.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
