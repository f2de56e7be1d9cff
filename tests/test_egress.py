"""Egress as enterprises run it: an HTTPS upstream reached through a real CONNECT proxy on loopback
(proxy.py, with basic auth), a certificate authority of the test's own (trustme), the
environment's HTTPS_PROXY / NO_PROXY, and the fast transport wherever no proxy applies."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import trustme

from backends.transport import PooledTransport
from gateway.runtime import egress_proxy, make_backend
from gateway.settings import DeploymentSettings
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.spy_upstream import SpyUpstream

PASSWORD = "pr0xy-s3cret-pass"


class ProxyProcess:
    """proxy.py on a loopback port, logging one access line per request or tunnel."""

    def __init__(self, folder: Path) -> None:
        self.log = folder / "proxy.log"
        port_file = folder / "proxy.port"
        cmd = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
               "--num-workers", "1", "--num-acceptors", "1", "--basic-auth", f"gateway:{PASSWORD}", "--log-level", "INFO"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.port = int(wait_until(lambda: port_file.is_file() and port_file.read_text().strip(), timeout=30, what="proxy.py"))

    def url(self, password: str = PASSWORD) -> str:
        return f"http://gateway:{password}@127.0.0.1:{self.port}"

    def tunnels(self, port: int) -> int:
        """Tunnels to `port` closed so far (proxy.py writes the line when a tunnel ends)."""
        return self.log.read_text().count(f"CONNECT localhost:{port}")

    def settled(self, port: int, expected: int) -> int:
        """The tunnel count once it reaches `expected` (or what it is after a second)."""
        try:
            return wait_until(lambda: self.tunnels(port) >= expected and self.tunnels(port), timeout=1)
        except AssertionError:
            return self.tunnels(port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, pem


@pytest.fixture(scope="module")
def upstream(ca: tuple[trustme.CA, Path]) -> Iterator[SpyUpstream]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca[0].issue_cert("localhost").configure_cert(context)
    spy = SpyUpstream(tls=context).start()
    yield spy
    spy.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"))
    yield process
    process.stop()


def gateway(tmp_path: Path, upstream: SpyUpstream, extra: str = "", env: dict[str, str] | None = None) -> GatewayProcess:
    config = tmp_path / "egress.yaml"
    config.write_text(f"""
auth: {{enabled: false}}
pools:
  hosted:
    retry: {{max_attempts: 1}}
    deployments:
      - {{id: hosted, base_url: "{upstream.base_url}", {extra}}}
""")
    return GatewayProcess(config, env={"HTTPS_PROXY": "", "HTTP_PROXY": "", "NO_PROXY": "", **(env or {})})


def ask(process: GatewayProcess) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=f"{process.url}/v1", api_key="unused", max_retries=0)
    return client.chat.completions.create(model="hosted", messages=[{"role": "user", "content": "hi"}], max_tokens=3)


def test_an_https_upstream_through_a_connect_proxy_with_its_own_ca(
    tmp_path: Path, upstream: SpyUpstream, proxy: ProxyProcess, ca: tuple[trustme.CA, Path]
) -> None:
    before = proxy.tunnels(upstream.port)
    process = gateway(tmp_path, upstream, f'proxy: "{proxy.url()}", ca_bundle: "{ca[1]}"')
    try:
        assert ask(process).choices[0].message.content
        assert ask(process).choices[0].message.content
        assert PASSWORD not in process.logs()
    finally:
        process.stop()
    assert proxy.settled(upstream.port, before + 1) == before + 1  # one tunnel, kept alive for the second request


def test_the_environments_proxy_is_used_unless_no_proxy_or_the_deployment_says_otherwise(
    tmp_path: Path, upstream: SpyUpstream, proxy: ProxyProcess, ca: tuple[trustme.CA, Path]
) -> None:
    cases = [  # (env, deployment's own setting, tunnels expected)
        ({"HTTPS_PROXY": proxy.url()}, "", 1),
        ({"https_proxy": proxy.url(), "no_proxy": "example.com,localhost"}, "", 0),
        ({"HTTPS_PROXY": proxy.url(), "NO_PROXY": "127.0.0.0/8,example.com"}, "", 1),  # neither names the host
        ({"HTTPS_PROXY": proxy.url()}, "proxy: none, ", 0),
    ]
    for i, (env, own, tunnels) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        before = proxy.tunnels(upstream.port)
        process = gateway(folder, upstream, f'{own}ca_bundle: "{ca[1]}"', env)
        try:
            assert ask(process).choices[0].message.content
        finally:
            process.stop()
        assert proxy.settled(upstream.port, before + tunnels) - before == tunnels, (env, own)


def test_a_refused_proxy_password_or_an_unknown_ca_is_a_502_that_shows_no_secret(
    tmp_path: Path, upstream: SpyUpstream, proxy: ProxyProcess, ca: tuple[trustme.CA, Path]
) -> None:
    wrong = "wr0ng-proxy-password"
    for i, settings in enumerate([f'proxy: "{proxy.url(wrong)}", ca_bundle: "{ca[1]}"', ""]):
        folder = tmp_path / str(i)
        folder.mkdir()
        process = gateway(folder, upstream, settings)
        try:
            with pytest.raises(openai.APIStatusError) as caught:
                ask(process)
            assert caught.value.status_code == 502
            assert wrong not in str(caught.value.body) and wrong not in process.logs()
        finally:
            process.stop()


def test_the_fast_transport_is_kept_wherever_no_proxy_applies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    direct = make_backend(DeploymentSettings(id="a", base_url="https://api.example.com/v1"), tmp_path)
    assert isinstance(direct._transport, PooledTransport)  # type: ignore[attr-defined]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    proxied = make_backend(DeploymentSettings(id="a", base_url="https://api.example.com/v1"), tmp_path)
    assert isinstance(proxied._transport, httpx.AsyncHTTPTransport)  # type: ignore[attr-defined]
    plain_http = make_backend(DeploymentSettings(id="a", base_url="http://10.0.0.5:8000/v1"), tmp_path)
    assert isinstance(plain_http._transport, PooledTransport)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("http://vllm:8000/v1", {"HTTPS_PROXY": "http://p:1"}, None),  # only HTTP_PROXY / ALL_PROXY cover http://
        ("http://vllm:8000/v1", {"ALL_PROXY": "http://p:1"}, "http://p:1"),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "openai.com"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".openai.com"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "notopenai.com"}, "http://p:1"),
        ("https://10.1.2.3:8443/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://10.1.2.3:8443/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.1.2.3:9999"}, "http://p:1"),
        ("https://10.1.2.3:8443/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.1.2.3:8443"}, None),
    ],
)
def test_no_proxy_is_read_as_curl_reads_it(url: str, env: dict[str, str], expected: str | None) -> None:
    assert egress_proxy(url, None, env) == expected


def test_a_missing_ca_bundle_or_a_proxy_that_is_not_a_url_is_a_config_problem(tmp_path: Path) -> None:
    from gateway import config

    (tmp_path / "not-a-cert.pem").write_text("hello")
    source = tmp_path / "gateway.yaml"
    for setting, problem in [
        ('ca_bundle: "missing.pem"', "ca_bundle: cannot read"),
        ('ca_bundle: "not-a-cert.pem"', "ca_bundle: cannot read"),
        ('proxy: "proxy.corp:3128"', "proxy: must be an http:// or https:// URL, or none"),
    ]:
        raw = f"auth: {{enabled: false}}\npools:\n  p:\n    deployments: [{{id: d, base_url: 'https://api.example.com/v1', {setting}}}]\n"
        with pytest.raises(config.ConfigError) as caught:
            config.parse(raw.encode(), str(source), {})
        assert problem in str(caught.value), str(caught.value)
