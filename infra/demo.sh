#!/usr/bin/env bash
# Sets up and runs the main job on the embedded default: bundled sample data, no cloud.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fanout-target}"
cargo build --release --quiet --bin fanout
bin="$CARGO_TARGET_DIR/release/fanout"
"$bin" sample-data examples/data
"$bin" run examples/orders.yaml "$@"
