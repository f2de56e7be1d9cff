"""Loopback ports for the tests' servers and for upstreams that must not answer."""

from __future__ import annotations

import socket

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
