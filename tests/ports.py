"""Ports for the servers the tests start on 127.0.0.1, chosen outside the kernel's ephemeral range.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range every outgoing connection
takes its local port from. Between picking such a port and the server binding it, a Ray head opens dozens of
connections, and one of them may take it (seen: the dashboard failed with "address already in use" and the whole
cluster module errored). Below the range no connection takes a port by itself.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOW = 20000  # above Ray's default worker ports (10002-19999)


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere (macOS: 49152) the range below is outside it too


_taken: set[int] = set()  # handed out in this process: two servers of one test must not get the same port


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, below the ephemeral range."""
    high = _ephemeral_start() - 1
    for _ in range(200):
        port = random.randint(_LOW, high)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {_LOW}-{high}")
