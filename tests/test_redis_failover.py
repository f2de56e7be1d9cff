"""Redis that fails over, for real: a master and its replica behind three Sentinels
(`redis-server --sentinel`), two gateways on `redis+sentinel://`, steady load, and the master
SIGKILLed. One gateway's limits and budgets fail open (`auth.on_store_error: open`), the other's
budgets fail closed (the default); both are back on the new master within the Sentinels'
failover time, and no request is charged twice. Then a Redis Cluster of three masters (no
replicas) that loses one: the cluster stops answering, and each gateway keeps its policy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.access.keys import hash_key
from tests.helpers.errors import assert_openai_error
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.redis_ha import RedisClusterProcesses, SentinelProcesses

pytestmark = pytest.mark.slow
BUDGET = "sk-gw-failover-budget-0123456789"
PER_TOKEN = 0.001  # USD: price 1000 per 1M tokens, in and out
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@dataclass
class Gateways:
    sentinel: SentinelProcesses
    open: GatewayProcess
    closed: GatewayProcess


def two_gateways(tmp_path: Path, url: str, upstream: FakeUpstream) -> list[GatewayProcess]:
    """Budgets and limits failing open, then (the default) budgets failing closed."""
    made = []
    try:
        for policy in ("open", "{}"):
            path = tmp_path / f"{'open' if policy == 'open' else 'closed'}.yaml"
            path.write_text(f"""
reload: {{watch: false}}
redis: {{url: "{url}"}}
auth:
  on_store_error: {policy}
  store_timeout_s: 0.3
  keys:
    - {{alias: budget, key_hash: "{hash_key(BUDGET)}", rpm: 100000, budget: {{day: 100000}}}}
pools:
  chat:
    aliases: [gpt-4o-mini]
    deployments: [{{id: model, base_url: "{upstream.base_url}", price: {{input_per_1m: 1000, output_per_1m: 1000}}}}]
""")
            made.append(GatewayProcess(path))
    except BaseException:
        for g in made:
            g.stop()
        raise
    return made


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Gateways]:
    sentinel = SentinelProcesses(tmp_path)
    upstream = FakeUpstream(Behavior(), name="model").start_in_thread()
    try:
        made = two_gateways(tmp_path, sentinel.url, upstream)
        yield Gateways(sentinel, made[0], made[1])
        for g in made:
            g.stop()
    finally:
        upstream.stop()
        sentinel.stop()


@dataclass
class Load:
    """Requests with the budget key to one gateway, one after another, until stopped."""

    gateway: GatewayProcess
    outcomes: list[tuple[float, float, int, float]] = field(default_factory=list)  # start, end, status, cost
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        with httpx.Client(base_url=self.gateway.url, headers={"authorization": f"Bearer {BUDGET}"}, timeout=10) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                answer = client.post("/v1/chat/completions", json=CHAT)
                cost = answer.json()["usage"]["total_tokens"] * PER_TOKEN if answer.status_code == 200 else 0.0
                if answer.status_code != 200:
                    assert_openai_error(answer, answer.status_code)
                self.outcomes.append((start, time.monotonic(), answer.status_code, cost))

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join(20)
        assert not thread.is_alive(), "a request hung"


def spent(gateway: GatewayProcess) -> float:
    return float(httpx.get(f"{gateway.admin_url}/admin/keys/cfg:budget", timeout=5).json()["spent"]["day"])


def test_the_master_killed_under_load(gateways: Gateways) -> None:
    made = httpx.post(f"{gateways.open.admin_url}/admin/keys", json={"alias": "made-before"}).json()
    loads = [Load(gateways.open), Load(gateways.closed)]
    threads = [load.start() for load in loads]
    time.sleep(1.5)
    killed_at = gateways.sentinel.kill_master()
    time.sleep(6.0)
    for load, thread in zip(loads, threads, strict=True):
        load.stop(thread)
    opened, closed = loads

    # Fails open: every request answered, through the outage too.
    assert {o[2] for o in opened.outcomes} == {200}
    assert sum(o[0] > killed_at for o in opened.outcomes) > 20
    # Fails closed: refused with a clean 503 while no master answers, then served by the new one.
    during = [o for o in closed.outcomes if o[0] > killed_at]
    assert {o[2] for o in during} <= {200, 503}
    back = min(o[0] for o in during if o[2] == 200)
    failover_s = back - killed_at
    assert failover_s < 10, failover_s  # 0.5 s to call it down, then the Sentinels' election
    assert all(o[2] == 200 for o in during if o[0] > back)
    print(f"\nbudgets closed: served by the new master {failover_s:.2f} s after the kill")

    # The new master holds what the old one had (the key made before), and nothing twice.
    new_master = gateways.sentinel.master_address()
    assert new_master[1] == gateways.sentinel.replica_port
    made_key = {"authorization": f"Bearer {made['key']}"}
    assert httpx.post(f"{gateways.closed.url}/v1/chat/completions", json=CHAT, headers=made_key).status_code == 200
    answered = sum(o[3] for load in loads for o in load.outcomes)
    wait_until(lambda: spent(gateways.closed) == spent(gateways.open), what="the settlements")
    assert 0 < spent(gateways.closed) <= answered + 1e-9  # lost in the outage at most, never twice
    before = spent(gateways.open)
    costs = []
    with httpx.Client(headers={"authorization": f"Bearer {BUDGET}"}, timeout=10) as client:
        for i in range(20):
            answer = client.post(f"{(gateways.open, gateways.closed)[i % 2].url}/v1/chat/completions", json=CHAT)
            costs.append(answer.json()["usage"]["total_tokens"] * PER_TOKEN)
    wait_until(lambda: spent(gateways.open) >= before + sum(costs) - 1e-9, what="the settlements")
    time.sleep(0.3)
    assert spent(gateways.closed) == pytest.approx(before + sum(costs))  # exactly once each


def test_a_cluster_that_loses_a_master_keeps_each_policy(tmp_path: Path) -> None:
    cluster = RedisClusterProcesses(tmp_path / "cluster")
    upstream = FakeUpstream(Behavior(), name="model").start_in_thread()
    made: list[GatewayProcess] = []
    try:
        made = two_gateways(tmp_path, cluster.url, upstream)
        loads = [Load(g) for g in made]
        threads = [load.start() for load in loads]
        time.sleep(1.0)
        cluster.procs[0].kill()  # without a replica to take over, the cluster stops answering
        killed_at = time.monotonic()
        time.sleep(5.0)
        for load, thread in zip(loads, threads, strict=True):
            load.stop(thread)  # and nothing hung
        opened, closed = loads
        assert {o[2] for o in opened.outcomes} == {200}
        assert sum(o[0] > killed_at + 2 for o in opened.outcomes) > 10  # served on, the cluster down
        late = [o[2] for o in closed.outcomes if o[0] > killed_at + 2]
        assert late and set(late) == {503}  # a budget that cannot be checked is refused, cleanly
    finally:
        for g in made:
            g.stop()
        upstream.stop()
        cluster.stop()
