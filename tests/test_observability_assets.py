"""The deploy assets in deploy/compose: dashboards that Grafana can load and that only ask
for series that exist, provisioning that names the datasources they use, a compose file whose
mounts exist, and a gateway config that validates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import jsonschema
import pytest
import yaml

from gateway import config
from tests.helpers.gateway import GatewayProcess
from tests.helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "deploy" / "compose"
DASHBOARDS = sorted((ASSETS / "grafana" / "dashboards").glob("*.json"))

# Grafana's dashboard JSON model (grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/),
# the parts a provisioned dashboard must get right.
PANEL_TYPES = [
    "timeseries",
    "stat",
    "table",
    "state-timeline",
    "gauge",
    "bargauge",
    "heatmap",
    "text",
    "row",
    "piechart",
    "traces",
]
SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "editable": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "templating": {"type": "object", "required": ["list"]},
        "annotations": {"type": "object", "required": ["list"]},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": PANEL_TYPES},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                    "datasource": {"type": "object", "required": ["type", "uid"]},
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["refId"],
                            "anyOf": [{"required": ["expr"]}, {"required": ["query", "queryType"]}],
                        },
                    },
                    "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
                },
            },
        },
    },
}
# Series that come from elsewhere than this repository's code: Tempo's metrics generator.
EXTERNAL = {"traces_spanmetrics_latency"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def served_metric_names(tmp_path: Path, redis: RedisServer) -> set[str]:
    """Every metric family a running gateway with all its parts on (keys with limits in Redis, a
    router, the cache, tracing) serves at /metrics, and every family the engine renders."""
    from prometheus_client.parser import text_string_to_metric_families

    from backends.local_engine.metrics import EngineMetrics
    from gateway.access.keys import hash_key

    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
redis: {{url: "{redis.url}"}}
auth:
  keys: [{{alias: dash, key_hash: "{hash_key("sk-gw-dashboard-test")}", rpm: 100, tpm: 100000, budget: {{day: 5}}}}]
telemetry: {{enabled: true, endpoint: "http://127.0.0.1:9/v1/traces"}}
cache: {{enabled: true}}
routers:
  auto: {{tiers: {{small: {{pool: a}}, medium: {{pool: a}}, large: {{pool: a}}}}}}
pools:
  a: {{deployments: [{{id: a-1, backend: echo, price: {{input_per_1m: 1, output_per_1m: 1}}}}]}}
""")
    gateway = GatewayProcess(path)
    try:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-gw-dashboard-test"})
        assert answer.status_code == 200, answer.text
        served = {f.name for f in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text)}
    finally:
        gateway.stop()
    engine = SimpleNamespace(stats=lambda: dict.fromkeys(ENGINE_STATS, 0.0))  # what the engine's stats() returns
    rendered, _ = EngineMetrics(engine).render()  # type: ignore[arg-type]
    return served | {f.name for f in text_string_to_metric_families(rendered.decode())}


ENGINE_STATS = ("running", "waiting", "kv_usage", "prefix_hit_rate", "preemptions", "prompt_tokens", "generation_tokens")


def base_name(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_follows_grafanas_model(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    jsonschema.validate(dashboard, SCHEMA)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} runs past the 24 columns"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine


def test_uids_are_unique_and_datasources_are_provisioned() -> None:
    provisioned = yaml.safe_load((ASSETS / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text())
    known = {(d["type"], d["uid"]) for d in provisioned["datasources"]}
    uids = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.append(dashboard["uid"])
        for panel in dashboard["panels"]:
            for ds in [panel["datasource"], *(t.get("datasource", panel["datasource"]) for t in panel["targets"])]:
                assert (ds["type"], ds["uid"]) in known, f"{path.name}: {panel['title']!r} uses an unprovisioned datasource {ds}"
    assert len(uids) == len(set(uids))


def test_dashboards_ask_only_for_series_that_exist(tmp_path: Path, redis_server: RedisServer) -> None:
    defined = served_metric_names(tmp_path, redis_server) | EXTERNAL
    assert {"gateway_cost_usd", "gateway_requests", "gateway_limits_store_up", "engine_kv_cache_usage_ratio"} <= defined
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if "expr" not in target:
                    continue
                names_only = re.sub(r"\bby \([^)]*\)", "", re.sub(r"\{[^}]*\}", "", target["expr"]))  # labels out
                for series in re.findall(r"\b((?:gateway|engine|traces)_[a-z_]+)\b", names_only):
                    assert base_name(series) in defined, (
                        f"{path.name}: {panel['title']!r} asks for {series}, which nothing exports"
                    )


def test_cost_dashboard_finds_the_most_expensive_traces_by_the_cost_attribute() -> None:
    cost = json.loads((ASSETS / "grafana" / "dashboards" / "gateway-cost.json").read_text())
    queries = [t["query"] for p in cost["panels"] for t in p["targets"] if t.get("queryType") == "traceql"]
    assert queries and all("span.gen_ai.usage.cost" in q for q in queries)


def test_compose_mounts_exist_and_the_stack_gateway_config_is_valid() -> None:
    compose = yaml.safe_load((ASSETS / "docker-compose.yaml").read_text())
    stack = {"gateway-1", "gateway-2", "haproxy", "redis", "otel-collector", "tempo", "prometheus", "grafana"}
    assert stack <= set(compose["services"])
    for replica in ("gateway-1", "gateway-2"):  # the image of the repository's Dockerfile, on the stack's config
        service = compose["services"][replica]
        assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}
        assert service["environment"]["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
        assert "./gateway.yaml:/etc/gateway/gateway.yaml:ro" in service["volumes"]
    haproxy = (ASSETS / "haproxy.cfg").read_text()
    assert "server gateway-1 gateway-1:8000" in haproxy and "server gateway-2 gateway-2:8000" in haproxy
    assert "option httpchk GET /health/readiness" in haproxy
    if shutil.which("haproxy"):  # Debian's haproxy, when installed: the file as HAProxy itself reads it
        check = subprocess.run(["haproxy", "-c", "-f", str(ASSETS / "haproxy.cfg")], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ASSETS / source).exists(), f"compose mounts {source}, which is missing"
    loaded = config.load(ASSETS / "gateway.yaml")
    assert loaded.settings.telemetry.enabled and loaded.settings.cache.store == "redis"
    tempo = yaml.safe_load((ASSETS / "tempo.yaml").read_text())
    assert {"gen_ai.request.model", "gateway.tier"} <= set(tempo["metrics_generator"]["processor"]["span_metrics"]["dimensions"])
