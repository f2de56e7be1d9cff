"""deploy/k8s: each overlay rendered by `kubectl kustomize` (kubectl's built-in kustomize) and every
object checked against the Kubernetes schemas (kubernetes-validate, strict: no unknown fields);
the ServiceMonitor, a Prometheus Operator CRD those schemas do not hold, is checked by hand. The
config each overlay mounts validates, and the start-only checksum annotation matches it."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
K8S_VERSION = "1.31.0"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are rendered with its built-in kustomize")
    out = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None, hashed: bool = False) -> dict[str, Any]:
    """The one object of `kind` named `name` (`hashed`: `name-<hash>`, as kustomize names a generated Secret)."""

    def named(o: dict[str, Any]) -> bool:
        actual = o["metadata"]["name"]
        return name is None or (actual.rpartition("-")[0] if hashed else actual) == name

    found = [o for o in objects if o["kind"] == kind and named(o)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


@pytest.mark.parametrize("overlay", ["single", "ha", "gpu"])
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    for obj in render(overlay):
        if obj["kind"] == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["single", "ha", "gpu"])
def test_the_gateway_is_probed_bounded_and_unprivileged(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment", "llm-gateway")
    pod = deployment["spec"]["template"]["spec"]
    [gateway] = [c for c in pod["containers"] if c["name"] == "gateway"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert gateway["resources"]["requests"] and gateway["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001  # the image's user
    service = one(objects, "Service", "llm-gateway")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_single_overlay_runs_the_embedded_default_alone() -> None:
    objects = render("single")
    assert {o["kind"] for o in objects} == {"Deployment", "Service"}
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert "env" not in deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", ["ha", "gpu"])
def test_replicas_share_redis_reload_their_config_and_roll_on_start_only_changes(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment", "llm-gateway")
    template = deployment["spec"]["template"]
    [gateway] = [c for c in template["spec"]["containers"] if c["name"] == "gateway"]
    assert deployment["spec"]["replicas"] >= 3
    assert {"name": "GATEWAY_CONFIG", "value": "/etc/gateway/gateway.yaml"} in gateway["env"]
    secret = one(objects, "Secret", "llm-gateway-secrets", hashed=True)
    assert gateway["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]  # the hashed name: a new Secret rolls
    configmap = one(objects, "ConfigMap", "llm-gateway-config")
    assert configmap["metadata"]["name"] == "llm-gateway-config"  # no hash: updated in place, and reloaded
    assert {"name": "config", "configMap": {"name": "llm-gateway-config"}} in template["spec"]["volumes"]
    text = configmap["data"]["gateway.yaml"]
    env = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    loaded = config.parse(text.encode(), "gateway.yaml", env)
    assert loaded.settings.reload.watch and loaded.settings.redis.url and loaded.settings.cache.store == "redis"
    assert template["metadata"]["annotations"]["llm-gateway/start-only-checksum"] == config.start_only_checksum(text.encode())
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and hpa["spec"]["minReplicas"] >= 3
    monitor = one(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= one(objects, "Service", "llm-gateway")["metadata"]["labels"].items()
    )
    assert one(objects, "Service", "llm-gateway-redis")


def test_the_gpu_overlay_asks_for_a_gpu_node_and_the_cuda_image() -> None:
    deployment = one(render("gpu"), "Deployment", "llm-gateway")
    pod = deployment["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    assert gateway["image"] == "llm-gateway:cuda" and gateway["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_a_start_only_change_changes_the_checksum_and_a_reloadable_one_does_not() -> None:
    text = (OVERLAYS / "ha" / "gateway.yaml").read_text()
    base = config.start_only_checksum(text.encode())
    assert config.start_only_checksum(text.replace("interval_s: 2.0", "interval_s: 3.0").encode()) != base  # reload.*
    assert config.start_only_checksum(text.replace("output_per_1m: 0.60", "output_per_1m: 0.70").encode()) == base  # a price
