#!/usr/bin/env bash
# Build the native hot path and put it beside site/native_first.py (experiment, issue 20).
set -euo pipefail
cd "$(dirname "$0")"
export PYO3_PYTHON="${PYO3_PYTHON:-$(cd ../.. && pwd)/.venv/bin/python}"
cargo build --release
cp target/release/libgovpipe_native.so site/govpipe_native.so
