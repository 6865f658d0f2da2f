#!/usr/bin/env bash
# Sets up and runs every test: the one command CI runs (.ci/run) and the README names.
#
# Installs what the suite needs into caches outside the clone (a Python venv with the
# independent Parquet reader; later the AWS emulators), builds, lints, runs the unit,
# property, conformance and end-to-end suites, and cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fanout-target}"
CACHE="${FANOUT_CACHE:-$HOME/.cache/fanout}"
VENV="$CACHE/venv-$(sha256sum tests/py/requirements.txt | cut -c1-12)"
step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

LS_VENV="$CACHE/localstack-$(sha256sum tests/py/localstack-requirements.txt | cut -c1-12)"
PY313="${FANOUT_PY313:-$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python}"
RUN="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

venv() { # venv DIR PYTHON REQUIREMENTS: built in place (scripts hard-code its path), marked when complete
  if [ ! -f "$1/.complete" ]; then
    rm -rf "$1" && "$2" -m venv "$1"
    "$1/bin/pip" install --quiet --disable-pip-version-check -r "$3"
    touch "$1/.complete"
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL NAME
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 did not answer on $1; its log:" >&2; cat "$RUN/$2.log" >&2; return 1
}

step "python venv with the test readers and moto ($VENV)"
venv "$VENV" python3 tests/py/requirements.txt
export FANOUT_PYTHON="$VENV/bin/python"

step "headless Chromium for the report test"
infra/chromium.sh

step "LocalStack venv, Python 3.13 ($LS_VENV)"
[ -x "$PY313" ] || { echo "LocalStack needs Python 3.13 (pyenv 3.13.0 or FANOUT_PY313=/path/to/python3.13)" >&2; exit 1; }
venv "$LS_VENV" "$PY313" tests/py/localstack-requirements.txt

step "local AWS peers on 127.0.0.1"
MOTO_PORT=$(free_port)
# moto with S3's conditional writes atomic, as S3's are (tests/py/moto_server_atomic.py).
"$VENV/bin/python" tests/py/moto_server_atomic.py -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 &
pids+=($!)
LS_PORT=$(free_port)
mkdir -p "$RUN/localstack"
SERVICES=cloudwatch OVERRIDE_IN_DOCKER=0 GATEWAY_LISTEN="127.0.0.1:$LS_PORT" PERSISTENCE=0 \
  FILESYSTEM_ROOT="$RUN/localstack" "$LS_VENV/bin/python" -m localstack.runtime.main >"$RUN/localstack.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/" moto
wait_http "http://127.0.0.1:$LS_PORT/_localstack/health" localstack
echo "moto on :$MOTO_PORT, LocalStack (CloudWatch) on :$LS_PORT"
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
export AWS_ENDPOINT_URL_CLOUDWATCH="http://127.0.0.1:$LS_PORT"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "the planner's dependency tree is free of DataFusion"
if cargo tree -p fanout-planner -e normal --quiet | grep -q "datafusion"; then
  echo "fanout-planner depends on DataFusion: keep it behind the library's sql feature" >&2; exit 1
fi

step "build"
cargo build --workspace --all-targets --quiet

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
cargo test --workspace --doc --quiet

step "the report template on its sample data, in Chromium"
python3 tests/py/render_report.py shared/src/report/template.html tests/py/report_sample.json "$RUN/sample.html"
"$VENV/bin/python" tests/py/report_check.py "$RUN/sample.html" --expect tests/py/report_sample.expect.json --screenshot "$RUN/sample.png"

step "the benchmark on a tiny input (fanout, DuckDB, Polars, pyarrow agree on CSV, JSON lines, .csv.gz, .csv.zst, Parquet at 1 and 2 threads; fanout rejects a huge record within 256 MiB; compaction off and on write the same rows)"
bench/run --tiny --formats --memory --compaction --fanout-bin "$CARGO_TARGET_DIR/debug/fanout"
# The section options on one small section: rounds (medians, ranges), one thread count,
# chosen shape and engines, outputs kept in a given work folder.
bench/run --tiny --shapes parquet --threads 1 --rounds 2 --engines fanout,duckdb-noreject \
  --keep-outputs --work-dir "$RUN/bench-work" --json "$RUN/bench.json" \
  --fanout-bin "$CARGO_TARGET_DIR/debug/fanout"
# Its output files and median file sizes, against the files the runs kept.
"$FANOUT_PYTHON" tests/py/bench_files_check.py "$RUN/bench.json" "$RUN/bench-work"

step "SAM template: sam validate, cfn-lint, checkov, IAM and state machine tests"
infra/check-template.sh

step "all tests passed in $(( $(date +%s) - started )) s"
