"""The import rules of DESIGN.md, checked in a fresh interpreter (what a module drags in shows only there)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ("litestar", "httpx", "httpcore", "uvicorn")
HEAVY = ("torch", "faiss", "onnxruntime", "transformers")


def loaded_after(*modules: str) -> set[str]:
    """Top-level packages in `sys.modules` after importing `modules` in a new interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def modules_of(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return [package, *(f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)]) if not m.ispkg)]


@pytest.mark.parametrize("package", ["gateway.routing", "gateway.cache"])
def test_routing_and_cache_load_no_web_framework_and_no_http_client(package: str) -> None:
    dragged = loaded_after(*modules_of(package)) & set(WEB)
    assert not dragged, f"importing {package}'s modules loads {sorted(dragged)}"


def test_the_request_path_modules_of_routing_and_cache_load_no_heavy_runtime() -> None:
    """faiss and onnxruntime load only with the index, the embedder and the verifier, when a cache is built."""
    heavy = ("index", "embedder", "verifier")
    light = [m for m in modules_of("gateway.routing") + modules_of("gateway.cache") if m.rsplit(".", 1)[1] not in heavy]
    dragged = loaded_after(*light) & set(HEAVY)
    assert not dragged, f"{sorted(dragged)} loaded by {light}"


def test_backends_never_load_the_gateway() -> None:
    modules = [*modules_of("backends"), *modules_of("backends.local_engine")]
    modules = [m for m in modules if not m.endswith("triton_kernels")]  # needs a GPU build of triton to import
    assert "gateway" not in loaded_after(*modules)


def test_importing_the_gateway_package_loads_no_app() -> None:
    assert not loaded_after("gateway") & set(WEB)
