#!/usr/bin/env bash
# TEST DOUBLE: the lightest stand-in for an engine worker, for fleets of hundreds per node
# (benchmarks/fleet.py). It is the engine's interpreter (engine.python=<this file>): it takes
# SGLang's argv, listens on its --host/--port and answers every request, /health included,
# with one OpenAI chat completion (what the readiness canary checks). socat forks this script
# (--answer) per request; at rest a stub is bash + socat, a few MB (a Python double is about 10 MB).
set -euo pipefail
if [ "${1:-}" = --answer ]; then
  # One connection (socat runs this per request): read the request (headers, then the body by
  # its Content-Length) before answering. An answer sent before the request arrived is an
  # "UnexpectedMessage" to hyper (sglang-router's client), which then retries its registration
  # step after 1-4 s; unread request bytes at close turn the FIN into a reset.
  length=0
  while IFS= read -r line; do
    line=${line%$'\r'}
    [ -n "$line" ] || break
    case "${line,,}" in content-length:*) length=${line#*:} length=${length// /} ;; esac
  done
  [ "$length" -gt 0 ] && head -c "$length" >/dev/null
  exec cat "$2"
fi
host=0.0.0.0 port=
while [ $# -gt 0 ]; do
  case "$1" in
    --host) host=$2; shift ;;
    --port) port=$2; shift ;;
  esac
  shift
done
[ -n "$port" ] || { echo "stub worker: no --port in its argv" >&2; exit 2; }
body='{"id":"stub","object":"chat.completion","model":"stub","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
reply=$(mktemp)
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
  "${#body}" "$body" > "$reply"
socat "TCP-LISTEN:${port},bind=${host},reuseaddr,fork" "SYSTEM:'${0}' --answer '${reply}'" &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -f "$reply"' EXIT
trap 'exit 0' TERM INT
echo "stub worker listening on ${host}:${port}"
wait "$pid"
