"""The admin API on a listener of its own: behind a load balancer or sidecar on the same host every
traffic connection comes from loopback, so the port, not the peer's address, keeps traffic out of
`/admin/*`. Tested through a real HAProxy both ways: in front of the traffic port (the admin API is
not there, with `option forwardfor` or without), and in front of an admin listener bound beyond
loopback (a key is required; the gateway does not start without one)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.errors import assert_openai_error
from tests.helpers.gateway import ROOT, GatewayProcess
from tests.helpers.haproxy import HAProxy, need_haproxy
from tests.helpers.polling import wait_until

ADMIN_KEY = "admin-listener-key-0123456789"
BASE = (
    "reload: {watch: true, interval_s: 0.2}\nauth: {enabled: false}\npools:\n  echo:\n    deployments: [{id: e, backend: echo}]\n"
)
KEYED = BASE + f"admin: {{api_key: {ADMIN_KEY}}}\n"
BEARER = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[GatewayProcess]:
    (tmp_path / "plain.yaml").write_text(BASE)
    gateway = GatewayProcess(tmp_path / "plain.yaml")
    yield gateway
    gateway.stop()


def test_the_admin_api_answers_on_its_own_listener_only(plain: GatewayProcess) -> None:
    for method, path in (("GET", "/admin/config"), ("GET", "/admin/breakers"), ("POST", "/admin/config/reload")):
        refused = httpx.request(method, plain.url + path)
        assert_openai_error(refused, 404)
        assert "admin.port" in refused.json()["error"]["message"]
        assert httpx.request(method, plain.admin_url + path).status_code == 200
    # and the admin listener serves nothing else
    for path in ("/v1/models", "/health/readiness", "/metrics"):
        assert httpx.get(plain.url + path).status_code == 200
        assert_openai_error(httpx.get(plain.admin_url + path), 404)
    answer = httpx.post(
        plain.admin_url + "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    )
    assert_openai_error(answer, 404)


def test_through_haproxy_in_front_of_traffic_the_admin_api_is_out_of_reach(plain: GatewayProcess, tmp_path: Path) -> None:
    # Every connection HAProxy makes comes from loopback; on the traffic port the old rule (loopback
    # may use /admin/* without a key) let any client through.
    for backend in ("", "option forwardfor"):
        proxy = HAProxy(tmp_path, [f"127.0.0.1:{plain.port}"], backend=backend)
        try:
            assert httpx.get(f"{proxy.url}/v1/models").status_code == 200
            assert_openai_error(httpx.get(f"{proxy.url}/admin/config"), 404)
            assert_openai_error(httpx.post(f"{proxy.url}/admin/keys", json={"alias": "mine"}), 404)
        finally:
            proxy.stop()


def test_an_admin_listener_beyond_loopback_needs_its_key_through_haproxy(tmp_path: Path) -> None:
    need_haproxy()
    path = tmp_path / "wide.yaml"
    path.write_text(KEYED)
    gateway = GatewayProcess(path, admin_host="0.0.0.0")
    proxy = HAProxy(tmp_path, [f"127.0.0.1:{gateway.admin_port}"], backend="option forwardfor")
    try:
        assert_openai_error(httpx.get(f"{proxy.url}/admin/config"), 401)
        assert_openai_error(httpx.get(f"{proxy.url}/admin/config", headers={"authorization": "Bearer wrong"}), 401)
        assert httpx.get(f"{proxy.url}/admin/config", headers=BEARER).status_code == 200
        assert_openai_error(httpx.get(f"{gateway.admin_url}/admin/config"), 401)  # loopback is no pass here
        # A reload that takes the key away does not open the listener.
        path.write_text(BASE)
        wait_until(lambda: "config reloaded" in gateway.logs(), what="the reload")
        refused = httpx.get(f"{proxy.url}/admin/config")
        assert_openai_error(refused, 401)
        assert "admin.api_key" in refused.json()["error"]["message"]
    finally:
        proxy.stop()
        gateway.stop()


def test_without_a_key_the_gateway_will_not_listen_beyond_loopback(tmp_path: Path) -> None:
    wide = tmp_path / "wide.yaml"
    wide.write_text(BASE + "admin: {host: 0.0.0.0}\n")
    checked = subprocess.run([sys.executable, "-m", "gateway", "validate", str(wide)], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 1 and "admin.host" in checked.stdout + checked.stderr
    traffic = tmp_path / "traffic.yaml"
    traffic.write_text(BASE + "admin: {on_traffic_port: true}\n")
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(traffic)], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 1 and "admin.on_traffic_port" in checked.stdout + checked.stderr
    # an inherited socket is judged by where it is bound, whatever the file says
    (tmp_path / "plain.yaml").write_text(BASE)
    with pytest.raises(RuntimeError, match="beyond loopback and needs a key"):
        GatewayProcess(tmp_path / "plain.yaml", admin_host="0.0.0.0")


def test_on_the_traffic_port_by_choice_the_key_is_required_through_haproxy(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text(BASE + f"admin: {{api_key: {ADMIN_KEY}, on_traffic_port: true}}\n")
    gateway = GatewayProcess(path)
    proxy = HAProxy(tmp_path, [f"127.0.0.1:{gateway.port}"])
    try:
        assert_openai_error(httpx.get(f"{proxy.url}/admin/config"), 401)  # HAProxy's loopback address is no pass
        assert httpx.get(f"{proxy.url}/admin/config", headers=BEARER).status_code == 200
        assert httpx.get(f"{gateway.admin_url}/admin/config", headers=BEARER).status_code == 200  # its own listener too
    finally:
        proxy.stop()
        gateway.stop()


def test_workers_share_both_listeners_and_drain_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "workers.yaml"
    path.write_text(BASE + "server: {drain_delay_s: 0.5, drain_timeout_s: 5}\n")
    gateway = GatewayProcess(path, args=["--workers", "2"])
    try:
        chat = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
        for _ in range(6):
            assert httpx.post(f"{gateway.url}/v1/chat/completions", json=chat).status_code == 200
            assert httpx.get(f"{gateway.admin_url}/admin/config").status_code == 200
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(20) == 0
    finally:
        if gateway.proc.poll() is None:
            gateway.stop()


def test_a_taken_admin_port_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = tmp_path / "taken.yaml"
        path.write_text(BASE + f"admin: {{port: {port}}}\n")
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0"]
        started = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert f"admin.port: cannot listen on 127.0.0.1:{port}" in started.stderr
