#!/usr/bin/env bash
# The README's curl walk-through, checked: run it against a running example.
#
#   cargo run --example axum_saas --features axum &   # or actix_saas
#   bash scripts/walkthrough.sh http://127.0.0.1:3000
#
# Needs curl and jq. Fails at the first unexpected answer.
set -euo pipefail
base=${1:-http://127.0.0.1:3000}
run=$RANDOM$RANDOM   # fresh names, so it can run again against a database

expect() { # expect STATUS -- curl args...
    local want=$1; shift 2
    local out status
    out=$(mktemp)
    status=$(curl -s -o "$out" -w '%{http_code}' "$@")
    if [[ $status != "$want" ]]; then
        echo "expected $want, got $status for: curl $*" >&2
        cat "$out" >&2
        exit 1
    fi
    cat "$out"
    rm -f "$out"
}
json=(-H 'content-type: application/json')

echo "1. Ada registers and gets her own tenant"
expect 201 -- "${json[@]}" -X POST "$base/auth/register" \
    -d "{\"email\":\"ada-$run@acme.example\",\"password\":\"correct horse battery\",\"tenant\":{\"slug\":\"acme-$run\",\"name\":\"Acme\"}}" >/dev/null

echo "2. Ada logs in"
token=$(expect 200 -- "${json[@]}" -X POST "$base/auth/login" \
    -d "{\"email\":\"ada-$run@acme.example\",\"password\":\"correct horse battery\"}" | jq -r .access_token)

echo "3. Ada creates a project"
project=$(expect 201 -- "${json[@]}" -H "authorization: Bearer $token" -X POST "$base/projects" \
    -d '{"name":"Apollo"}' | jq -r .id)
expect 200 -- -H "authorization: Bearer $token" "$base/projects?limit=20" \
    | jq -c '{items: [.items[] | {id, name}], next_cursor}'

echo "4. Ada creates an API key and a machine uses it"
key=$(expect 201 -- "${json[@]}" -H "authorization: Bearer $token" -X POST "$base/api-keys" \
    -d '{"name":"ci","scopes":["projects:read"]}' | jq -r .secret)
expect 200 -- -H "authorization: Bearer $key" "$base/projects/$project" | jq -c '{id, name}'
expect 403 -- "${json[@]}" -H "authorization: Bearer $key" -X POST "$base/projects" -d '{"name":"nope"}' | jq -c '{status, detail}'

echo "5. Bob, in another tenant, cannot see Ada's project"
bob=$(expect 201 -- "${json[@]}" -X POST "$base/auth/register" \
    -d "{\"email\":\"bob-$run@bravo.example\",\"password\":\"correct horse battery\",\"tenant\":{\"slug\":\"bravo-$run\",\"name\":\"Bravo\"}}" | jq -r .access_token)
expect 404 -- -H "authorization: Bearer $bob" "$base/projects/$project" | jq -c '{status, title}'

echo "6. Ada invites Carol as a member; Carol may delete only her own projects"
invitation=$(expect 201 -- "${json[@]}" -H "authorization: Bearer $token" -X POST "$base/invitations" \
    -d "{\"email\":\"carol-$run@acme.example\",\"roles\":[\"member\"]}" | jq -r .token)
expect 200 -- "${json[@]}" -X POST "$base/invitations/accept" \
    -d "{\"token\":\"$invitation\",\"display_name\":\"Carol\",\"password\":\"correct horse battery\"}" >/dev/null
carol=$(expect 200 -- "${json[@]}" -X POST "$base/auth/login" \
    -d "{\"email\":\"carol-$run@acme.example\",\"password\":\"correct horse battery\"}" | jq -r .access_token)
expect 403 -- -H "authorization: Bearer $carol" -X DELETE "$base/projects/$project" | jq -c '{status, detail}'
own=$(expect 201 -- "${json[@]}" -H "authorization: Bearer $carol" -X POST "$base/projects" \
    -d '{"name":"Carol'"'"'s"}' | jq -r .id)
expect 204 -- -H "authorization: Bearer $carol" -X DELETE "$base/projects/$own"

echo "7. Ada reads her tenant's usage: each request to /projects counted one api_call"
calls=$(expect 200 -- -H "authorization: Bearer $token" "$base/usage?meter=api_calls&group_by=route" \
    | jq -r '.meters[] | select(.meter == "api_calls") | .total')
echo "api_calls this period: $calls"
[[ $calls == 7 ]] || { echo "expected 7 api_calls, got $calls" >&2; exit 1; }

echo "walk-through ok"
