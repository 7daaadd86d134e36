#!/usr/bin/env bash
# Memory under a login flood: peak and settled RSS of `authgate serve` around
# a burst of concurrent POST /auth/login for unknown users (each one an
# argon2id verification of 19 MiB unless the gateway refuses it first).
#
#   bash bench/login_burst.sh                      # target/release/authgate, 200 at once
#   AUTHGATE_BIN=/path/to/authgate BURST=200 SETTLE=30 bash bench/login_burst.sh
#
# Prints one line per binary: peak (VmHWM) and RSS (VmRSS) before, right
# after and SETTLE seconds after the burst, in MiB, with the answers' status
# codes. The address and user thresholds are raised so that only the hash
# bound (login.max_concurrent_hashes, when the binary has it) limits the
# burst. Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINS=${AUTHGATE_BIN:-$ROOT/target/release/authgate}
BURST=${BURST:-200}
SETTLE=${SETTLE:-30}
ROUNDS=${ROUNDS:-1}

command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
WORK=$(mktemp -d)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

field() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$PID/status"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_one() {
    local bin=$1 dir=$WORK/run port
    rm -rf "$dir"; mkdir -p "$dir"
    head -c 48 /dev/urandom | base64 | tr -d '\n' >"$dir/jwt.secret"
    port=$(free_port)
    local login="max_failures = 1000"
    # Binaries with the separate per-address threshold take it; older ones
    # apply max_failures to the address too.
    cat >"$dir/probe.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[jwt]
secret_file = "$dir/jwt.secret"
[login]
address_max_failures = 100000
EOF
    if "$bin" check-config --config "$dir/probe.toml" >/dev/null 2>&1; then
        login="$login
address_max_failures = 100000"
    fi
    cat >"$dir/authgate.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[store]
url = "sqlite://$dir/authgate.db"
[jwt]
secret_file = "$dir/jwt.secret"
[login]
$login
[[route]]
path_prefix = "/"
upstream = "http://127.0.0.1:9"
EOF
    AUTHGATE_LOG=warn "$bin" serve --config "$dir/authgate.toml" >"$dir/log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    # One login first, so start-up allocations (the dummy hash) are in the baseline.
    curl -s -o /dev/null -H 'content-type: application/json' \
        -d '{"username":"warmup","password":"x"}' "http://127.0.0.1:$port/auth/login"
    local base_rss
    base_rss=$(field VmRSS)
    local statuses=$dir/statuses
    : >"$statuses"
    for round in $(seq "$ROUNDS"); do
        seq "$BURST" | xargs -P "$BURST" -I{} curl -s -o /dev/null -w '%{http_code}\n' \
            -H 'content-type: application/json' \
            -d "{\"username\":\"nobody-$round-{}\",\"password\":\"wrong\"}" \
            "http://127.0.0.1:$port/auth/login" >>"$statuses"
    done
    local after_rss hwm settled_rss
    after_rss=$(field VmRSS)
    sleep "$SETTLE"
    hwm=$(field VmHWM)
    settled_rss=$(field VmRSS)
    local counts
    counts=$(sort "$statuses" | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')
    printf '%-40s baseline %5d MiB  peak %5d MiB  after %5d MiB  settled(+%ss) %5d MiB  [%s]\n' \
        "$(basename "$bin")" $((base_rss / 1024)) $((hwm / 1024)) $((after_rss / 1024)) \
        "$SETTLE" $((settled_rss / 1024)) "$counts"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

echo "burst of $BURST concurrent logins for unknown users x $ROUNDS, $(nproc) cores"
for bin in $BINS; do
    run_one "$bin"
done
