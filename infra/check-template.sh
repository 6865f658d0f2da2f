#!/usr/bin/env bash
# Offline checks of the SAM template (template.yaml); needs no AWS account and no network
# past PyPI for the first install.
#
#   1. sam validate, then sam validate --lint
#   2. cfn-lint 1.53.3: 0 errors, 0 warnings, 0 informational findings
#   3. samtranslator -> CloudFormation JSON, scanned by checkov (--framework cloudformation
#      --skip-download, so its IAM checks see the roles): 0 failed; every skip justified in
#      the template (Metadata.CheckovSkips and a comment on the resource); once with the
#      defaults and once with EventMode=true (its resources are conditional)
#   4. tests/py/test_template.py: least-privilege IAM, queue timing, the Lambda contract
#   5. tests/py/test_state_machine.py: the ASL created and run in moto (127.0.0.1)
#
# Installs its tools into a venv under ${FANOUT_CACHE:-~/.cache/fanout}, keyed by the hash
# of infra/template-requirements.txt (about 80 s the first time, from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FANOUT_CACHE:-$HOME/.cache/fanout}"
REQ=infra/template-requirements.txt
VENV="$CACHE/venv-template-$(sha256sum "$REQ" | cut -c1-12)"
# FANOUT_TEMPLATE: check another file (the tests read it too), e.g. a deliberately broken copy.
export FANOUT_TEMPLATE="$(realpath "${FANOUT_TEMPLATE:-template.yaml}")"
TEMPLATE="$FANOUT_TEMPLATE"
step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

# Offline, dummy credentials, one region; nothing may reach a real account.
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export SAM_CLI_TELEMETRY=0 PYTHONDONTWRITEBYTECODE=1
export BC_SKIP_MAPPING=TRUE  # checkov: no guideline download (as --skip-download)

TMP="$(mktemp -d)"
MOTO_PID=""
cleanup() {
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

step "venv with the template tools ($VENV)"
if [ ! -f "$VENV/.installed" ]; then
  t0=$(date +%s)
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  touch "$VENV/.installed"
  echo "installed in $(( $(date +%s) - t0 )) s"
fi
PY="$VENV/bin/python"

step "sam validate"
"$VENV/bin/sam" validate --template "$TEMPLATE"
"$VENV/bin/sam" validate --lint --template "$TEMPLATE"

step "cfn-lint $("$VENV/bin/cfn-lint" --version | awk '{print $2}')"
# Exit code: 0 clean, else a bit mask (2 error, 4 warning, 8 informational).
lint_rc=0
"$VENV/bin/cfn-lint" --include-checks I --format parseable -- "$TEMPLATE" > "$TMP/cfn-lint.txt" || lint_rc=$?
cat "$TMP/cfn-lint.txt"
count() { grep -c ":$1[0-9]*:" "$TMP/cfn-lint.txt" || true; }
echo "cfn-lint: $(count E) errors, $(count W) warnings, $(count I) informational"
[ "$lint_rc" -eq 0 ] || { echo "cfn-lint found problems (exit $lint_rc)"; exit 1; }

# Twice: with the defaults, and with the event mode on (checkov evaluates Conditions with
# the parameters' defaults, so the event mode's resources are only scanned in the second).
for variant in defaults event-mode; do
  step "checkov on the translated template ($variant)"
  overrides=()
  [ "$variant" = event-mode ] && overrides=(EventMode=true StartOnUpload=false)
  "$PY" tests/py/cfn_template.py translate "$TEMPLATE" "$TMP/template.json" "${overrides[@]}"
  checkov_rc=0
  "$VENV/bin/checkov" --framework cloudformation --skip-download -f "$TMP/template.json" \
    -o json > "$TMP/checkov.json" 2> "$TMP/checkov.err" || checkov_rc=$?
  report_rc=0
  "$PY" tests/py/cfn_template.py checkov-report "$TMP/checkov.json" "$TMP/template.json" || report_rc=$?
  if [ "$checkov_rc" -ne 0 ] || [ "$report_rc" -ne 0 ]; then
    cat "$TMP/checkov.err"
    echo "checkov ($variant): failed checks (exit $checkov_rc/$report_rc)"
    exit 1
  fi
done

step "moto server on 127.0.0.1"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# MOTO_PORT: moto's Step Functions calls moto's Lambda through this port.
MOTO_PORT=$port "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > "$TMP/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then break; fi
  kill -0 "$MOTO_PID" 2>/dev/null || { cat "$TMP/moto.log"; echo "moto server died"; exit 1; }
  sleep 0.2
done
export FANOUT_MOTO_ENDPOINT="http://127.0.0.1:$port"
echo "$FANOUT_MOTO_ENDPOINT (pid $MOTO_PID)"

step "template and state machine tests"
(cd tests/py && "$PY" -m unittest -v test_template test_state_machine)

step "template checks passed in $(( $(date +%s) - started )) s"
