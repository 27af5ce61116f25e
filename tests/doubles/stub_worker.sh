#!/usr/bin/env bash
# TEST DOUBLE: the lightest stand-in for an engine worker, for fleets of hundreds per node
# (benchmarks/fleet.py). It is the engine's interpreter (engine.python=<this file>): it takes
# SGLang's argv, listens on its --host/--port and answers every request, /health included,
# with one OpenAI chat completion (what the readiness canary checks). The server is one perl
# process (stub_worker.pl, a few MB): bash + socat forking this script per request cost ~8 ms
# of wall time a request, and sglang-router 0.3.2 makes 5 of them per worker it registers
# (issue 22); a persistent process answers in well under a millisecond, as an engine would.
set -euo pipefail
host=0.0.0.0 port='' model=stub
while [ $# -gt 0 ]; do
  case "$1" in
    --host) host=$2; shift ;;
    --port) port=$2; shift ;;
    --served-model-name) model=$2; shift ;;
  esac
  shift
done
[ -n "$port" ] || { echo "stub worker: no --port in its argv" >&2; exit 2; }
# One answer for every path but /v1/models: a chat completion whose fields also make it the
# /server_info that model discovery reads (model_path, served_model_name); /v1/models lists the
# model (SMG routes a model's requests only to workers that list it there).
answer() {
  printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "${#1}" "$1"
}
body='{"id":"stub","object":"chat.completion","model":"'$model'","model_path":"'$model'","served_model_name":"'$model'","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
models='{"object":"list","data":[{"id":"'$model'","object":"model","root":"'$model'","owned_by":"stub"}]}'
exec perl "${0%/*}/stub_worker.pl" "$host" "$port" "$(answer "$body")" "$(answer "$models")"
