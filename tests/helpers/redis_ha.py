"""Redis that fails over, from real `redis-server` processes on loopback: a Redis Cluster of three
masters, and a master with a replica watched by three Sentinels. Nothing is kept on disk."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.helpers.polling import wait_until
from tests.helpers.ports import free_port, outside_ephemeral_port
from tests.helpers.redis_server import RedisServer

SLOTS = 16384


def _server(folder: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    return subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


class RedisClusterProcesses:
    """Three masters, each serving a third of the slots; no replicas."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.ports = [_cluster_port() for _ in range(masters)]
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000")
        self.procs = [_server(folder / f"node-{p}", p, *cluster) for p in self.ports]
        for port in self.ports:
            wait_until(lambda port=port: _answers(port), timeout=10, what="a cluster node")
        clients = [redis.Redis(port=p, socket_timeout=2) for p in self.ports]
        share = SLOTS // masters
        for i, c in enumerate(clients):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        wait_until(lambda: all(_cluster_ok(c, masters) for c in clients), timeout=20, what="the cluster to agree")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=2)

    def stop(self) -> None:
        for proc in self.procs:
            _stop(proc)


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too: below the ephemeral range,
    so that the bus port stays under 65536 and no outgoing connection takes either."""
    for _ in range(100):
        port = outside_ephemeral_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _cluster_ok(client: redis.Redis, masters: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO").decode()
    return "cluster_state:ok" in info and f"cluster_known_nodes:{masters}" in info


class SentinelProcesses:
    """A master, its replica, and three Sentinels (quorum 2) that fail over 0.5 s after the master
    stops answering."""

    SERVICE = "gwmaster"

    def __init__(self, folder: Path) -> None:
        self.master_port, self.replica_port = free_port(), free_port()
        self.master = _server(folder / "master", self.master_port)
        wait_until(lambda: _answers(self.master_port), timeout=10, what="the master")
        self.replica = _server(folder / "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        wait_until(self._replicating, timeout=15, what="the replica to sync")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels = []
        for port in self.sentinel_ports:
            conf = folder / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
                f"sentinel failover-timeout {self.SERVICE} 3000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            self.sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.STDOUT))  # fmt: skip
        wait_until(self._watched, timeout=20, what="the sentinels to see the master and its replica")

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{self.SERVICE}"

    def _replicating(self) -> bool:
        try:
            info = redis.Redis(port=self.replica_port, socket_timeout=1).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _watched(self) -> bool:
        for port in self.sentinel_ports:
            try:
                s = redis.Redis(port=port, socket_timeout=1)
                master = s.sentinel_master(self.SERVICE)
                replicas = s.sentinel_slaves(self.SERVICE)
            except redis.RedisError:
                return False
            if int(master["num-other-sentinels"]) < 2 or not replicas:
                return False
        return True

    def master_address(self) -> tuple[str, int]:
        """Where the sentinels say the master is now."""
        host, port = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE
        )
        return host.decode(), int(port)

    def client(self) -> redis.Redis:
        """A client of the master the sentinels name now."""
        host, port = self.master_address()
        return redis.Redis(host=host, port=port, socket_timeout=2)

    def kill_master(self) -> float:
        """SIGKILL the master; returns when (time.monotonic())."""
        self.master.kill()
        return time.monotonic()

    def stop(self) -> None:
        for proc in [*self.sentinels, self.master, self.replica]:
            _stop(proc)


SharedRedis = RedisServer | RedisClusterProcesses | SentinelProcesses
"""What a `redis.url` may name: `url`, `client()` (synchronous, for a test's look), `stop()`."""
