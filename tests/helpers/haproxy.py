"""Debian's `haproxy` on a loopback port in front of servers the test names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.polling import wait_until
from tests.helpers.ports import free_port


def need_haproxy() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (Debian's package `haproxy`; scripts/test installs it)")


class HAProxy:
    """One frontend, one backend of `servers` ("host:port"), round robin. `check`: the path of an
    HTTP health check (every 200 ms; one failure takes a server out, two passes put it back);
    `backend`: more lines for the backend (`option forwardfor`, say)."""

    def __init__(self, folder: Path, servers: list[str], *, check: str | None = None, backend: str = "") -> None:
        need_haproxy()
        self.port = free_port()
        lines = [f"  server s{i} {address}" for i, address in enumerate(servers)]
        if check:
            lines[:0] = [f"  option httpchk GET {check}", "  http-check expect status 200",
                         "  default-server check inter 200ms fall 1 rise 2"]  # fmt: skip
        self.config = folder / f"haproxy-{self.port}.cfg"
        self.config.write_text(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n"
            "  retries 2\n  retry-on conn-failure empty-response\n  option redispatch\n"
            f"frontend front\n  bind 127.0.0.1:{self.port}\n  default_backend back\n"
            "backend back\n  balance roundrobin\n" + "".join(f"  {b.strip()}\n" for b in backend.splitlines() if b.strip())
            + "\n".join(lines) + "\n"
        )  # fmt: skip
        self.proc = subprocess.Popen(["haproxy", "-f", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._listening, timeout=10, what="haproxy to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
        try:
            httpx.get(f"{self.url}/", timeout=1)
            return True
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
