#!/usr/bin/env bash
# Load harness for the example apps (release builds of axum_saas and
# actix_saas), on memory and on Postgres.
#
#   bash scripts/load.sh [--tenants N] [--logins N] [--duration 20s]
#                        [--connections 64] [--apps "axum actix"]
#                        [--backends "memory postgres"] [--routes "jwks list me create"]
#                        [--repeat N] [--no-build] [--bin-dir DIR] [--perf DIR]
#
# For each app and backend it starts a fresh process, registers N tenants
# (one owner each), logs in --logins times round-robin over them, then
# drives each route with wrk (100 tenants' tokens in turn): the public JWKS,
# GET /projects (a page of 50), GET /auth/me and POST /projects. It then
# reads back every tenant's projects and checks that each acknowledged write
# (201) is listed exactly once, under its own tenant. It prints one table of
# requests/s, with the resident memory of the app at start, after the
# logins and after the read runs, and on Postgres the database transactions
# per request (from pg_stat_database). With --perf DIR it also records a
# CPU profile of the app during each route's run (`perf record`, from
# Debian's linux-perf; software clock, so it works in VMs without hardware
# counters) as DIR/<app>-<backend>-<n>-<route>.data, for `perf report -i`.
#
# Needs wrk, curl and jq (`apt-get install wrk curl jq`); for Postgres,
# psql and DATABASE_URL naming a database the app may migrate (see
# scripts/test-db.sh), and KEY_ENCRYPTION_KEY as the apps want it: generated
# when unset, which suits a fresh database only (the signing keys stored in
# it are encrypted under the key of the first run). Clients
# come from many 127.x.y.z addresses, so the per-client registration and
# login limits see many clients, as in production. Not part of .ci/run:
# it takes several minutes.
set -euo pipefail

tenants=100
logins=1000
duration=20s
connections=64
apps="axum actix"
backends="memory postgres"
routes="jwks list me create"
repeat=1
build=1
bin_dir=""
perf_dir=""
while (($#)); do
    case $1 in
        --tenants) tenants=$2; shift 2 ;;
        --logins) logins=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --apps) apps=$2; shift 2 ;;
        --backends) backends=$2; shift 2 ;;
        --routes) routes=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --bin-dir) bin_dir=$2; build=0; shift 2 ;;
        --perf) perf_dir=$2; shift 2 ;;
        *) sed -n '2,25p' "$0"; exit 2 ;;
    esac
done

tools="wrk curl jq"
[[ -n $perf_dir ]] && { tools+=" perf"; mkdir -p "$perf_dir"; perf_dir=$(cd "$perf_dir" && pwd); }
for tool in $tools; do
    command -v "$tool" >/dev/null || { echo "load.sh needs $tool (apt-get install $tool)" >&2; exit 2; }
done
if [[ $backends == *postgres* ]]; then
    command -v psql >/dev/null || { echo "load.sh needs psql for the Postgres runs" >&2; exit 2; }
    [[ -n ${DATABASE_URL:-} ]] || { echo "set DATABASE_URL for the Postgres runs (or --backends memory)" >&2; exit 2; }
    export KEY_ENCRYPTION_KEY=${KEY_ENCRYPTION_KEY:-$(head -c 32 /dev/urandom | base64)}
fi

root=$(cd "$(dirname "$0")/.." && pwd)
features=axum,actix
[[ $backends == *postgres* ]] && features+=,postgres
if ((build)); then
    (cd "$root" && cargo build --release --quiet --example axum_saas --example actix_saas --features "$features")
fi
bin_dir=${bin_dir:-${CARGO_TARGET_DIR:-$root/target}/release/examples}

work=$(mktemp -d)
app_pid=""
stop_app() {
    if [[ -n $app_pid ]]; then
        kill "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
        app_pid=""
    fi
}
trap 'stop_app; rm -rf "$work"' EXIT

port=${LOAD_PORT:-3900}
base=http://127.0.0.1:$port
mib() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
# CPU time the app has used, in clock ticks (user + system).
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# Context switches of all the app's threads (voluntary + involuntary).
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'; }
xacts() {
    psql -X -At "$DATABASE_URL" -c \
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
}

# Client address number $1 of this run: 127.<salt>.<hi>.<lo>.
salt=$((RANDOM % 200 + 20))
client() { echo "127.$salt.$(($1 / 250)).$(($1 % 250 + 1))"; }
export -f client
export base salt work

register() {
    local i=$1 run=$2 code
    code=$(curl -s -o "$work/reg.$i" -w '%{http_code}' --interface "$(client "$i")" \
        -H 'content-type: application/json' "$base/auth/register" \
        -d "{\"email\":\"load-$run-$i@t$i.example\",\"password\":\"correct horse battery\",
             \"tenant\":{\"slug\":\"load-$run-$i\",\"name\":\"Load $i\"}}")
    [[ $code == 201 ]] && printf '%s\t%s\n' "$i" "$(jq -r .access_token "$work/reg.$i")" > "$work/token.$i"
    echo "$code"
}
login() {
    local k=$1 run=$2 n=$3 user=$(($1 % $3))
    curl -s -o /dev/null -w '%{http_code}\n' --interface "$(client $((n + k)))" \
        -H 'content-type: application/json' "$base/auth/login" \
        -d "{\"email\":\"load-$run-$user@t$user.example\",\"password\":\"correct horse battery\"}"
}
# Every project of tenant $1, one "<tenant>\t<id>" line each, page by page.
list_all() {
    local i=$1 token cursor="" url
    token=$(cut -f2 "$work/token.$i")
    while :; do
        url="$base/projects?limit=1000${cursor:+&cursor=$cursor}"
        curl -sf -H "authorization: Bearer $token" "$url" > "$work/page.$i" || { echo "list failed: $i" >&2; return 1; }
        jq -r --arg t "$i" '.items[] | "\($t)\t\(.id)"' "$work/page.$i"
        cursor=$(jq -r '.next_cursor // empty' "$work/page.$i")
        [[ -n $cursor ]] || break
    done
}
export -f register login list_all

# One wrk run of route $1; prints "<requests/s> <requests> <non-2xx>
# <app CPU µs per request> <app context switches per request>".
drive() {
    local out cpu_before cpu perf_pid=""
    if [[ -n $perf_dir ]]; then
        perf record -q -F 499 -e cpu-clock --call-graph dwarf,32768 -p "$app_pid" \
            -o "$perf_dir/$profile_name-$1.data" 2>>"$work/perf.log" &
        perf_pid=$!
        sleep 0.5
    fi
    cpu_before=$(ticks "$app_pid")
    local switches_before
    switches_before=$(switches "$app_pid")
    out=$(LOAD_MODE=$1 LOAD_TOKENS="$work/tokens" LOAD_ACKS="$work/acks" \
        wrk -t2 -c"$connections" -d"$duration" -s "$root/scripts/load.lua" "$base" 2>&1)
    cpu=$(($(ticks "$app_pid") - cpu_before))
    local switched=$(($(switches "$app_pid") - switches_before))
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    echo "$out" >> "$work/wrk.log"
    local rate total bad
    rate=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<<"$out")
    total=$(awk '/requests in/ { print $1 }' <<<"$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    errors=$(awk '/Socket errors:/ { print }' <<<"$out")
    [[ -z $errors ]] || echo "    $1: $errors" >&2
    echo "${rate:-0} ${total:-0} ${bad:-0} $(awk -v c="$cpu" -v s="$switched" -v n="${total:-0}" -v hz="$hz" \
        'BEGIN { printf "%.1f %.2f", n ? c / hz * 1e6 / n : 0, n ? s / n : 0 }')"
}

runs=0
run_one() {
    local app=$1 backend=$2 run
    runs=$((runs + 1))
    profile_name="$app-$backend-$runs"
    run=$(date +%s)-$RANDOM
    salt=$(((salt + 1) % 200 + 20))
    rm -f "$work"/token.* "$work"/acks.* "$work"/reg.* "$work"/listed.*
    echo "== $app on $backend (run $run)" >&2
    local env=(env -u DATABASE_URL PORT=$port)
    [[ $backend == postgres ]] && env=(env PORT=$port DATABASE_URL="$DATABASE_URL")
    "${env[@]}" "$bin_dir/${app}_saas" > "$work/app.log" 2>&1 &
    app_pid=$!
    for _ in $(seq 300); do
        curl -sf -o /dev/null "$base/.well-known/jwks.json" && break
        kill -0 "$app_pid" 2>/dev/null || { cat "$work/app.log" >&2; exit 1; }
        sleep 0.2
    done
    local rss_start rss_logins rss_reads
    rss_start=$(mib "$app_pid")

    local codes
    codes=$(seq 0 $((tenants - 1)) | xargs -P 8 -I{} bash -c 'register {} '"$run")
    cat "$work"/token.* > "$work/tokens" 2>/dev/null || true
    local seeded
    seeded=$(wc -l < "$work/tokens")
    ((seeded == tenants)) || { echo "registered $seeded of $tenants: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')" >&2; exit 1; }

    codes=$(seq 0 $((logins - 1)) | xargs -P 8 -I{} bash -c 'login {} '"$run $tenants")
    local ok
    ok=$(grep -c '^200$' <<<"$codes" || true)
    ((ok == logins)) || echo "    logins: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')" >&2
    rss_logins=$(mib "$app_pid")

    declare -A rate=() per=()
    local nonok=0 route before after r total bad us cs
    for route in $routes; do
        [[ $backend == postgres ]] && before=$(xacts)
        read -r r total bad us cs < <(drive "$route")
        echo "    $route: $r requests/s, $us µs CPU and $cs context switches per request, $bad non-2xx" >&2
        rate[$route]="$r ($us)"
        nonok=$((nonok + bad))
        if [[ $backend == postgres ]]; then
            sleep 1.5 # statistics reach pg_stat_database when a backend goes idle
            after=$(xacts)
            per[$route]=$(awk -v d=$((after - before)) -v n="$total" 'BEGIN { printf "%.2f", n ? d / n : 0 }')
        fi
        [[ $route == me ]] && rss_reads=$(mib "$app_pid")
    done
    rss_reads=${rss_reads:-$(mib "$app_pid")}

    local writes="-"
    if [[ " $routes " == *" create "* ]]; then
        cat "$work"/acks.* > "$work/acked" 2>/dev/null || : > "$work/acked"
        # One file per tenant: parallel writers to one file can split lines.
        seq 0 $((tenants - 1)) | xargs -P 4 -I{} bash -c 'list_all {} > "$work/listed.{}"'
        cat "$work"/listed.* > "$work/listed"
        # Each acknowledged id listed exactly once, under its own tenant;
        # no id listed twice anywhere.
        writes=$(awk -F'\t' '
            FILENAME == ARGV[1] { n[$2]++; owner[$2] = $1; next }
            { acked++; if ($2 == "?" || n[$2] != 1 || owner[$2] != $1) bad++ }
            END {
                for (id in n) if (n[id] > 1) dup++
                printf "%d acked, %d bad, %d listed twice", acked, bad + 0, dup + 0
            }' "$work/listed" "$work/acked")
    fi
    stop_app

    local q="-"
    [[ $backend == postgres ]] && q="${per[list]:--} / ${per[me]:--} / ${per[create]:--}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |\n' \
        "$app" "$backend" "${rate[jwks]:--}" "${rate[list]:--}" "${rate[me]:--}" "${rate[create]:--}" \
        "$nonok" "$writes" "$rss_start" "$rss_logins" "$rss_reads" "$q" >> "$work/table"
}

: > "$work/table"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for backend in $backends; do
    for app in $apps; do
        for _ in $(seq "$repeat"); do
            run_one "$app" "$backend"
        done
    done
done

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), \
load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end; wrk -t2 -c$connections -d$duration, \
$tenants tenants, $logins logins"
echo
echo "Requests/s for the whole machine, and in brackets the app's CPU time per request (µs, user + system)."
echo
echo "| app | backend | JWKS | GET /projects | GET /auth/me | POST /projects | non-2xx | writes checked | RSS MiB: start / after logins / after reads | Postgres xacts per request: list / me / create |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"
cat "$work/table"
