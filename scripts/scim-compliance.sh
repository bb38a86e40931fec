#!/usr/bin/env bash
# Runs an independent SCIM 2.0 compliance checker (scim2-tester, through
# the scim2 command of scim2-cli, pinned below, installed into a virtual
# environment from the Python package index) against the axum example app
# on in-memory stores, and prints its results.
#
#   bash scripts/scim-compliance.sh [path/to/axum_saas]
#
# Fails when the checker reports an error not listed, with its reason, in
# scripts/scim-compliance.known, or when a listed one no longer occurs (so
# the list stays true).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-${CARGO_TARGET_DIR:-target}/debug/examples/axum_saas}
venv=${SCIM_CHECKER_VENV:-${CARGO_TARGET_DIR:-target}/scim-checker}
if [[ ! -x $venv/bin/scim2 ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "scim2-cli==0.6.0" "scim2-tester==0.5.2"
fi

log=$(mktemp)
report=$(mktemp)
env -u DATABASE_URL PORT=0 "$binary" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log" "$report"' EXIT
base=""
for _ in $(seq 100); do
    base=$(sed -n 's/^listening on //p' "$log" | head -n1)
    [[ -n $base ]] && break
    sleep 0.2
done
[[ -n $base ]] || { echo "the example did not start:"; cat "$log"; exit 1; }

json=(-H 'content-type: application/json')
curl -sf "${json[@]}" -X POST "$base/auth/register" \
    -d '{"email":"ada@scim.example","password":"correct horse battery","tenant":{"slug":"scim-check","name":"SCIM check"}}' >/dev/null
token=$(curl -sf "${json[@]}" -X POST "$base/auth/login" \
    -d '{"email":"ada@scim.example","password":"correct horse battery"}' | jq -r .access_token)
scim_token=$(curl -sf "${json[@]}" -H "authorization: Bearer $token" "$base/scim/tokens" \
    -d '{"name":"compliance"}' | jq -r .token)

SCIM_CLI_HEADERS="Authorization: Bearer $scim_token" \
    "$venv/bin/scim2" --url "$base/scim/v2" test >"$report" 2>&1 || true

successes=$(grep -c '^SUCCESS' "$report" || true)
errors=$(grep -c '^ERROR' "$report" || true)
echo "scim2-tester: $successes SUCCESS, $errors ERROR"
# One line per distinct error: `check | reason`.
found=$(awk '/^ERROR/ { name = $2; getline reason; sub(/^ +/, "", reason); print name " | " reason }' "$report" | sort -u)
known=$(grep -v '^#' scripts/scim-compliance.known | sed -n 's/^\(.*\) # .*$/\1/p' | sed 's/ *$//' | sort -u)
unexpected=$(comm -23 <(echo "$found") <(echo "$known") | sed '/^$/d')
gone=$(comm -13 <(echo "$found") <(echo "$known") | sed '/^$/d')
status=0
if [[ -n $unexpected ]]; then
    echo "errors not in scripts/scim-compliance.known:"; echo "$unexpected"; status=1
fi
if [[ -n $gone ]]; then
    echo "listed in scripts/scim-compliance.known but no longer reported (remove them):"; echo "$gone"; status=1
fi
if [[ $successes -eq 0 ]]; then
    echo "the checker reported no success:"; cat "$report"; status=1
fi
exit "$status"
