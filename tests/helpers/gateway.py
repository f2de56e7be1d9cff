"""A gateway on loopback: `gateway serve` as a real process, with a config file the test may rewrite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from tests.helpers.fake_upstream import FakeUpstream
from tests.helpers.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """`gateway serve` on a loopback port, with a config file the test may rewrite. The test binds
    the traffic port and the admin port and hands the listening sockets to the gateway (`--fd`,
    `--admin-fd`), so no other process can take a port between its choice and the gateway's
    start. `admin_host`: where the admin listener binds; `args`: more for `gateway serve`. `tree`: the checkout whose code it runs
    (benchmarks compare with another one)."""

    def __init__(
        self,
        config_path: Path,
        env: dict[str, str] | None = None,
        tree: Path = ROOT,
        admin_host: str = "127.0.0.1",
        args: list[str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.log = config_path.with_suffix(".log")
        listener = socket.create_server(("127.0.0.1", 0))
        admin = socket.create_server((admin_host, 0))
        self.port = listener.getsockname()[1]
        self.admin_port = admin.getsockname()[1]
        fds = (listener.fileno(), admin.fileno())
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--fd", str(fds[0])]
        if "--admin-fd" in (tree / "gateway" / "cli.py").read_text():  # an older checkout has no admin listener
            cmd += ["--admin-fd", str(fds[1])]
        else:
            self.admin_port = self.port
        cmd += args or []
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with listener, admin:  # the child has its own copies of the sockets; these close
            self.proc = subprocess.Popen(
                cmd, cwd=tree, env=full_env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, pass_fds=fds
            )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener (`/admin/*`)."""
        return f"http://127.0.0.1:{self.admin_port}"

    def _wait_ready(self) -> None:
        try:
            wait_until(self._ready, timeout=30, what="the gateway to be ready")
        except AssertionError:
            raise RuntimeError(f"gateway did not become ready:\n{self.log.read_text()}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/health/readiness", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def write_config(self, text: str) -> None:
        self.config_path.write_text(textwrap.dedent(text))

    def logs(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # SIGTERM would wait out server.drain_delay_s first
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def upstream_pool(
    name: str, upstream: FakeUpstream, *, model: str | None = None, extra: str = "", aliases: str = "[]", pool_extra: str = ""
) -> str:
    """YAML for a pool of one deployment at `upstream`."""
    model_line = f"\n        model: {model}" if model else ""
    return f"""
  {name}:
    aliases: {aliases}{pool_extra}
    deployments:
      - id: {name}-dep
        base_url: {upstream.base_url}{model_line}{extra}
"""
