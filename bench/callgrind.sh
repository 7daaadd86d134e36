#!/usr/bin/env bash
# Instructions per request on authgate's hot path, under valgrind's callgrind:
# a figure that barely moves on a noisy machine, unlike req/s, so a change to
# the hot path can be judged before and after on any box.
#
#   bash bench/callgrind.sh                  # all three paths, 10 s of load each
#   bash bench/callgrind.sh hs256 public     # some of them
#   CALLGRIND_SECONDS=5 bash bench/callgrind.sh
#   CALLGRIND_LOG=info bash bench/callgrind.sh   # as shipped: the access log on
#
# Paths: public (a public route, no credential), hs256 (Bearer HS256 JWT),
# accesskey (?accesskey=), accesskey-bearer (Authorization: Bearer ag_...),
# accesskey-header (X-API-Key), accesskey-limited (X-API-Key, a key with a
# rate limit of its own that never refuses), hs256-rule (the HS256 JWT under /limited, where
# one rate-limit rule by user applies that never refuses), and the HS256 and
# access-key credentials as forward-auth decisions only: verify-hs256 and
# verify-accesskey (/_authgate/verify/PATH, Envoy's path-prefix form;
# nothing is proxied). hosts1000: a public route among 1,000 routes over
# 200 host names (5 prefixes each, plus 200 wildcard routes), asked with one
# of those hosts: routing by host must cost the same as with one route
# (compare with public; the routes are added only when hosts1000 is asked).
# CALLGRIND_RATELIMIT_STORE picks the rule's store: memory (default), a
# Redis URL (Redis's own work is not counted, only the gateway's), or none
# (no [ratelimit] at all: the baseline; hs256-rule is then a plain route):
#
#   bash bench/callgrind.sh hs256 hs256-rule
#   CALLGRIND_RATELIMIT_STORE=redis://127.0.0.1:6379/0 bash bench/callgrind.sh hs256 hs256-rule
#
# CALLGRIND_TRACES=1 turns tracing on ([telemetry], every request sampled
# unless CALLGRIND_TRACE_RATIO says otherwise), exporting to the tests' OTLP
# receiver (tests/upstreams/otlp_receiver.py, decoding and discarding; not
# under valgrind): compare with the same paths without it, whose cost must
# not move.
#
#   CALLGRIND_TRACES=1 bash bench/callgrind.sh public hs256
#
# For each it prints the instructions per request
# (user space only; system calls are not counted) and the heaviest functions
# by inclusive cost. The callgrind files stay in the printed folder for
# `callgrind_annotate` or kcachegrind.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AUTHGATE=${AUTHGATE_BIN:-$ROOT/target/release/authgate}
SECONDS_PER_PATH=${CALLGRIND_SECONDS:-10}
RATELIMIT_STORE=${CALLGRIND_RATELIMIT_STORE:-memory}
# AUTHGATE_LOG of the measured gateway: warn (tuned, no access log) unless
# told otherwise; `info` is the default a user gets, one access line a request.
LOG_LEVEL=${CALLGRIND_LOG:-warn}
WORKERS=${CALLGRIND_WORKERS:-1}    # "default": no --workers flag
TRACES=${CALLGRIND_TRACES:-0}
TRACE_RATIO=${CALLGRIND_TRACE_RATIO:-1.0}
PATHS=("$@")
[ ${#PATHS[@]} -gt 0 ] || PATHS=(public hs256 accesskey)

log() { printf '[callgrind %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PATH=$PATH:/usr/sbin:/sbin
for tool in valgrind callgrind_annotate callgrind_control wrk nginx curl python3; do
    command -v "$tool" >/dev/null || die "missing $tool (Debian: apt-get install -y valgrind wrk nginx-light curl python3)"
done
if [ -z "${AUTHGATE_BIN:-}" ]; then
    log "cargo build --release --locked --bin authgate"
    (cd "$ROOT" && cargo build --release --locked --bin authgate >&2)
fi

W=$(mktemp -d /tmp/authgate-callgrind.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

read -r P_UP P_AG P_OTLP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

mkdir -p "$W/tmp"
cat >"$W/upstream.conf" <<EOF
pid $W/upstream.pid;
worker_processes 1;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $W/tmp/body;
    proxy_temp_path $W/tmp/proxy;
    fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi;
    scgi_temp_path $W/tmp/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$P_UP;
        location / { return 200 "ok"; }
    }
}
EOF
nginx -p "$W" -e "$W/upstream.err" -c "$W/upstream.conf" >"$W/upstream.log" 2>&1 &
PIDS+=("$!")

openssl rand -hex 32 >"$W/jwt.secret"
cat >"$W/authgate.toml" <<EOF
[server]
listen = "127.0.0.1:$P_AG"
shutdown_grace = 1

[store]
url = "sqlite://$W/authgate.db"

[jwt]
secret_file = "$W/jwt.secret"

[[route]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
auth = "required"

[[route]]
path_prefix = "/public"
upstream = "http://127.0.0.1:$P_UP"
auth = "public"
EOF
[ "$RATELIMIT_STORE" = none ] || cat >>"$W/authgate.toml" <<EOF

[ratelimit]
store = "$RATELIMIT_STORE"
key_prefix = "authgate-callgrind:$$:"

[[ratelimit.rule]]
name = "bench"
by = "user"
rate = 1000000
burst = 1000000
path_prefix = "/limited"
EOF
if [ "$TRACES" = 1 ]; then
    # shellcheck source=bench/lib/otlp_python.sh
    . "$ROOT/bench/lib/otlp_python.sh"
    OTLP_PY=$(OTLP_PYTHON=${CALLGRIND_OTLP_PYTHON:-} otlp_python "$W")
    env -u OTLP_OUT "$OTLP_PY" "$ROOT/tests/upstreams/otlp_receiver.py" "$P_OTLP" >"$W/otlp.log" 2>&1 &
    PIDS+=("$!")
    printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' \
        "$P_OTLP" "$TRACE_RATIO" >>"$W/authgate.toml"
fi
if [[ " ${PATHS[*]} " == *" hosts1000 "* ]]; then
    python3 - "$P_UP" >>"$W/authgate.toml" <<'PY'
import sys
up = sys.argv[1]
for h in range(200):
    for r in range(4):
        print(f'\n[[route]]\nhosts = ["h{h}.bench.test"]\npath_prefix = "/r{r}"\n'
              f'upstream = "http://127.0.0.1:{up}"\nauth = "public"\nmethods = ["GET", "HEAD"]')
    print(f'\n[[route]]\nhosts = ["*.w{h}.bench.test"]\npath_prefix = "/r0"\n'
          f'upstream = "http://127.0.0.1:{up}"\nauth = "public"')
PY
fi
ag() { "$AUTHGATE" --config "$W/authgate.toml" "$@"; }
echo "callgrind-password-$$" | ag user add bench --password-stdin >/dev/null
TOKEN=$(ag token issue --user bench)
ACCESS_KEY=$(ag key create --user bench | awk '/^key:/ {print $2}')
# A key with a budget of its own that never refuses (issue 24: its cost).
LIMITED_KEY=$(ag key create --user bench --rate 1000000 --burst 1000000 | awk '/^key:/ {print $2}')

WORKER_ARGS=(--workers "$WORKERS")
[ "$WORKERS" = default ] && WORKER_ARGS=()
AUTHGATE_LOG=$LOG_LEVEL valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.%p" \
    "$AUTHGATE" serve --config "$W/authgate.toml" "${WORKER_ARGS[@]}" >"$W/authgate.log" 2>&1 &
GW=$!
PIDS+=("$GW")
for _ in $(seq 300); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$P_AG/healthz" && break
    sleep 0.2
done
curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$P_AG/healthz" || die "authgate did not start under valgrind (see $W/authgate.log)"

log "AUTHGATE_LOG=$LOG_LEVEL, --workers $WORKERS$([ "$TRACES" != 1 ] || echo ", tracing on (sample_ratio $TRACE_RATIO)")"
# Write-type system calls (write, writev, sendto: /proc/PID/io syscw) per
# request: two are the floor (the answer to the client, the request to the
# upstream); an unbuffered log adds one per line.
syscw() { awk '/^syscw:/ {print $2}' "/proc/$GW/io"; }
printf '%-16s %12s %14s %12s\n' path requests "instr/request" "writes/req"
for path in "${PATHS[@]}"; do
    case $path in
        public) args=("http://127.0.0.1:$P_AG/public/x") ;;
        hosts1000) args=(-H "Host: h137.bench.test" "http://127.0.0.1:$P_AG/r3/x") ;;
        hs256) args=(-H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_AG/x") ;;
        hs256-rule) args=(-H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_AG/limited/x") ;;
        accesskey) args=("http://127.0.0.1:$P_AG/x?accesskey=$ACCESS_KEY") ;;
        accesskey-bearer) args=(-H "Authorization: Bearer $ACCESS_KEY" "http://127.0.0.1:$P_AG/x") ;;
        accesskey-header) args=(-H "X-API-Key: $ACCESS_KEY" "http://127.0.0.1:$P_AG/x") ;;
        accesskey-limited) args=(-H "X-API-Key: $LIMITED_KEY" "http://127.0.0.1:$P_AG/x") ;;
        verify-hs256) args=(-H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_AG/_authgate/verify/x") ;;
        verify-accesskey) args=("http://127.0.0.1:$P_AG/_authgate/verify/x?accesskey=$ACCESS_KEY") ;;
        *) die "unknown path $path (public, hosts1000, hs256, accesskey, accesskey-bearer, accesskey-header, accesskey-limited, hs256-rule, verify-hs256, verify-accesskey)" ;;
    esac
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}")" = 200 ] || die "$path does not answer 200"
    # Warm caches and pools, then count only the measured window.
    wrk -t1 -c8 -d2s "${args[@]}" >/dev/null
    callgrind_control -z "$GW" >/dev/null 2>&1
    writes_before=$(syscw)
    out=$(wrk -t1 -c8 -d"${SECONDS_PER_PATH}s" "${args[@]}")
    writes_after=$(syscw)
    callgrind_control --dump="$path" "$GW" >/dev/null 2>&1
    grep -q "Non-2xx" <<<"$out" && die "$path: non-2xx answers under load"
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    file=$(ls -t "$W"/callgrind.*.[0-9]* | head -1)
    cp "$file" "$W/$path.callgrind"
    total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    printf '%-16s %12s %14s %12s\n' "$path" "$requests" "$(( total / requests ))" \
        "$(awk -v w=$((writes_after - writes_before)) -v r="$requests" 'BEGIN {printf "%.2f", w / r}')"
    callgrind_annotate --inclusive=yes "$file" 2>/dev/null \
        | grep -E '^ *[0-9,]+ +\( *[0-9.]+%\)  [^ ]*:authgate::[^ ]* \[' \
        | grep -vE 'authgate::(main|cli::run) ' | head -8 | sed 's/^/    /' || true
done
[ "$TRACES" != 1 ] || log "spans: $(curl -s --max-time 5 "http://127.0.0.1:$P_AG/metrics" | grep '^authgate_trace_spans_total' | tr '\n' ' ')"
log "callgrind files: $W/*.callgrind (callgrind_annotate --inclusive=yes FILE)"
trap - EXIT
cleanup
