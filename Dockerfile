# The gateway image: CPU by default; `--build-arg VARIANT=cuda` for a GPU node running the bundled
# engine (PyTorch's CUDA build and onnxruntime-gpu; the host needs the NVIDIA container toolkit).
#   docker build -t llm-gateway .
#   docker run -p 8000:8000 llm-gateway                      # the embedded default config
#   docker run -p 8000:8000 -v $PWD/my.yaml:/etc/gateway/gateway.yaml -e GATEWAY_CONFIG=/etc/gateway/gateway.yaml llm-gateway
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway gateway
COPY backends backends
# torch is pinned by constraints.txt; its CPU or CUDA build comes from PyTorch's own index.
RUN if [ "$VARIANT" = "cuda" ]; then index=https://download.pytorch.org/whl/cu124; else index=https://download.pytorch.org/whl/cpu; fi \
 && pip install --extra-index-url "$index" -c constraints.txt . \
 && if [ "$VARIANT" = "cuda" ]; then pip uninstall -y onnxruntime && pip install -c constraints.txt ".[gpu]"; fi

FROM ${PYTHON_IMAGE}
# g++: the bundled engine compiles its CPU decode kernel for the machine it runs on, at first start.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/gateway gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=gateway:gateway config config
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/liveness', timeout=2).status != 200)"]
ENTRYPOINT ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
