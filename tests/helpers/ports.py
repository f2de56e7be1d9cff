"""Loopback ports for the tests' servers and for upstreams that must not answer."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_held: list[socket.socket] = []


def free_port() -> int:
    """A port nothing listens on right now. Another process may take it before the caller does:
    hand a child a listening socket instead, or check that what answers is the child."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_port() -> int:
    """A port that refuses connections for the rest of the session: bound and never listening, so
    no other process can take it and answer in a dead upstream's place."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    _held.append(held)
    return int(held.getsockname()[1])


def outside_ephemeral_port() -> int:
    """A free port below the kernel's ephemeral range, for a child that must listen on a port it is
    told (the managed engine: gateway workers find it there). The kernel gives ports in that range
    to every `bind(0)` and outgoing connection, so one of those cannot take this port before the
    child binds it; only another test choosing the same port at random could."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
