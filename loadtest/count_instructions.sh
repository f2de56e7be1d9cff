#!/usr/bin/env bash
# Instructions the gateway process executes for N non-streamed chat completions at concurrency 8
# (valgrind's callgrind, instrumentation switched on after start-up and a warm-up), for each checkout
# given: a before/after figure that the VM's speed and neighbours cannot blur.
#
#   loadtest/count_instructions.sh /work/base .      # N=1000 by default
#
# Run from a checkout with .venv; every DIR is run with this checkout's Python and DIR's code.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$PWD/.venv/bin/python"
here="$PWD"
n="${N:-1000}"
upstream_port=9311 gateway_port=9312
work="$(mktemp -d)"
"$py" -m tests.helpers.fake_upstream --port "$upstream_port" >/dev/null 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/gateway.yaml" <<EOF
reload: {watch: false}
auth: {enabled: false}
pools:
  fake:
    deployments:
      - {id: fake-1, base_url: 'http://127.0.0.1:$upstream_port/v1', price: {input_per_1m: 1, output_per_1m: 2}}
EOF
wait_for() { for _ in $(seq 1 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }
load() { (cd "$here" && "$py" -m loadtest.loadgen --url "http://127.0.0.1:$gateway_port/v1/chat/completions" -c 8 -n "$1" --warmup 0 >/dev/null); }
for dir in "$@"; do
  dir="$(cd "$dir" && pwd)"
  out="$work/callgrind.$(basename "$dir")"
  (cd "$dir" && PYTHONPATH="$dir" HF_HUB_OFFLINE=1 exec valgrind -q --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" "$py" -m gateway serve --config "$work/gateway.yaml" --port "$gateway_port" \
    --log-level warning) &
  gateway=$!
  wait_for "http://127.0.0.1:$gateway_port/health/liveness"
  load 300  # warm-up: connections, caches, the first requests' imports
  callgrind_control -i on "$gateway" >/dev/null 2>&1
  load "$n"
  callgrind_control -i off "$gateway" >/dev/null 2>&1
  kill -INT "$gateway"
  wait "$gateway" || true
  total="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {print $1}')"
  echo "$dir: $total instructions for $n requests"
done
