#!/usr/bin/env bash
# Sets up and runs the main job on the embedded default: bundled sample data, no cloud.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fanout-target}"
# The debug build the test command makes too (one build for both, in a third of a release
# build's time); the sample job takes under 2 s with it. Measured runs use `--release`.
cargo build --quiet --bin fanout
bin="$CARGO_TARGET_DIR/debug/fanout"
"$bin" sample-data examples/data
"$bin" run examples/orders.yaml "$@"
