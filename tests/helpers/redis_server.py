"""A private `redis-server` on a free loopback port, nothing kept on disk (tests and benchmarks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers.polling import wait_until
from tests.helpers.ports import free_port


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for _ in range(5):  # a port taken between its choice and redis-server's bind: another one
            self.port = free_port()
            if self._launch():
                return
        raise RuntimeError("redis-server did not start on any of five free ports")

    def start(self) -> None:
        """Start it again, on the same port, empty."""
        if not self._launch():
            raise RuntimeError(f"redis-server could not listen on port {self.port} again")

    def _launch(self) -> bool:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*cmd, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return wait_until(self._outcome, timeout=10, what="redis-server to answer or exit") == "ours"

    def _outcome(self) -> str | None:
        """"ours" once our process answers on the port, "gone" if it exited (the port was taken)."""
        if self.proc.poll() is not None:
            return "gone"
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)) as client:
                return "ours" if client.info("server")["process_id"] == self.proc.pid else None
        except redis.RedisError:
            return None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def client(self) -> redis.Redis:
        """A plain synchronous client (tests read and reset state with it)."""
        return redis.Redis(port=self.port, socket_timeout=2)
