#!/usr/bin/env bash
# The daemon itself with and without the native path: `govpipe run` reading
# examples/events.jsonl (twice) on stdin, writing to stdout; the two outputs must be the
# same bytes. Needs ./build.sh first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat "$root/examples/events.jsonl" "$root/examples/events.jsonl" >"$work/in.jsonl"
for mode in python native; do
    path=""
    [ "$mode" = native ] && path="$here/site"
    env PYTHONPATH="$path" \
        GOVPIPE_SIGNING_KEY="$(printf 'k%.0s' {1..32} | base64)" \
        GOVPIPE_SOURCE__KIND=stdin GOVPIPE_SINKS__STDOUT__ENABLED=true \
        GOVPIPE_SINKS__KAFKA__ENABLED=false GOVPIPE_SINKS__OTLP__ENABLED=false \
        GOVPIPE_SERVER__LISTEN=127.0.0.1:0 GOVPIPE_DEADLETTER__KIND=file \
        GOVPIPE_DEADLETTER__PATH="$work/dlq-$mode" \
        "$root/.venv/bin/govpipe" run <"$work/in.jsonl" >"$work/out-$mode.jsonl" 2>"$work/$mode.log"
done
env PYTHONPATH="$here/site" "$root/.venv/bin/python" -c \
    'import pipeline.processor as p; assert p.EventProcessor.process.__name__ == "native_first_process"'
cmp "$work/out-python.jsonl" "$work/out-native.jsonl"
echo "identical: $(wc -l <"$work/out-native.jsonl") events"
