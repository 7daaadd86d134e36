#!/usr/bin/env bash
# authgate benchmark: authgate next to nginx and HAProxy on one machine.
#
#   bash bench/run.sh                                   # full run (about 15 min on 2 cores)
#   BENCH_ROUNDS=1 BENCH_DURATION=3 BENCH_KEYS_COUNT=20000 bash bench/run.sh   # quick look
#
# Everything listens on 127.0.0.1 (free ports), every process started here is
# stopped on exit, and the results go to bench/results/YYYY-MM-DD-<machine>.md
# plus a .png chart. See bench/README.md for what is measured and the knobs.

# PID_<name> variables are set by start() through printf -v.
# shellcheck disable=SC2154
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
LIB=$BENCH/lib

ROUNDS=${BENCH_ROUNDS:-3}                       # interleaved rounds over all targets
DURATION=${BENCH_DURATION:-10}                  # seconds per wrk run
WARMUP=${BENCH_WARMUP:-2}                       # seconds of unrecorded warm-up per target
CONNS=${BENCH_CONNECTIONS:-32}                  # keep-alive connections, same for every target
THREADS=${BENCH_THREADS:-1}                     # wrk threads (all on the load core)
PROXY_CPU=${BENCH_PROXY_CPU:-1}                 # core for the proxy under test
LOAD_CPU=${BENCH_LOAD_CPU:-0}                   # core for wrk and the upstream
TWO_CPUS=${BENCH_TWO_WORKERS_CPUS:-$LOAD_CPU,$PROXY_CPU} # cores for authgate-jwt-hs256-2w
RUN_THROUGHPUT=${BENCH_THROUGHPUT:-1}
RUN_SHIPPED=${BENCH_SHIPPED:-1}                 # authgate as a user starts it (default workers, access log) + nginx with its log
RUN_2W=${BENCH_TWO_WORKERS:-1}                  # authgate --workers 2 on both cores (CPU per request only)
RUN_TRACES=${BENCH_TRACES:-1}                   # the HS256 row with [telemetry] sample_ratio 1.0 to a local OTLP receiver
RUN_HTTPS=${BENCH_HTTPS:-1}                     # TLS 1.3 keep-alive, wrk: authgate's TLS listener and nginx listen ssl
RUN_H2=${BENCH_H2:-1}                           # HTTP/2 over TLS, h2load: the same two listeners with ALPN h2
H2_STREAMS=${BENCH_H2_STREAMS:-10}              # h2load -m: concurrent streams per connection
RUN_IDLE=${BENCH_IDLE:-1}                       # RSS with idle keep-alive connections
IDLE_CONNS=${BENCH_IDLE_CONNECTIONS:-10000}
RUN_KEYS=${BENCH_KEYS:-1}                       # RSS and lookups with many cached access keys
KEYS_COUNT=${BENCH_KEYS_COUNT:-1000000}         # keys put in the store
KEYS_WARM=${BENCH_KEYS_WARM:-$KEYS_COUNT}       # distinct keys requested once (cache fill)
KEYS_FILL_LIMIT=${BENCH_KEYS_FILL_LIMIT:-900}   # seconds at most for the cache fill
RUN_LATENCY=${BENCH_LATENCY:-1}                 # p50/p99 at 50% and 90% of the HS256 peak (oha -q)
LATENCY_DURATION=${BENCH_LATENCY_DURATION:-10}  # seconds per fixed-rate run
OHA=${BENCH_OHA:-oha}
OHA_VERSION=${BENCH_OHA_VERSION:-1.16.0}
RUN_LOGIN=${BENCH_LOGIN:-1}                     # POST /auth/login throughput
LOGIN_CONNS=${BENCH_LOGIN_CONNECTIONS:-8}
INSTALL=${BENCH_INSTALL:-1}                     # apt-get install what is missing
BUILD=${BENCH_BUILD:-1}                         # cargo build --release first
MACHINE=${BENCH_MACHINE:-$(hostname -s)-$(nproc)cpu}
NOTE=${BENCH_NOTE:-}
OUT_DIR=${BENCH_OUT_DIR:-$BENCH/results}
AUTHGATE=${AUTHGATE_BIN:-$ROOT/target/release/authgate}
PASSWORD=bench-password-$$

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- installs
apt_updated=0
apt_install() {
    [ "$INSTALL" = 1 ] || die "missing $*; install it or run with BENCH_INSTALL=1"
    [ "$(id -u)" = 0 ] || die "missing $*; run as root or install it: apt-get install -y $*"
    if [ $apt_updated = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
command -v nginx >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v nginx >/dev/null || apt_install nginx-light || apt_install nginx
command -v haproxy >/dev/null || apt_install haproxy
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v openssl >/dev/null || apt_install openssl
command -v taskset >/dev/null || apt_install util-linux
command -v python3 >/dev/null || apt_install python3
[ "$RUN_H2" != 1 ] || command -v h2load >/dev/null || apt_install nghttp2-client

PY=python3
PLOTPY=
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import matplotlib' 2>/dev/null; then
        PLOTPY=$candidate
        break
    fi
done
if [ -z "$PLOTPY" ]; then
    if apt_install python3-matplotlib && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
        PLOTPY=/usr/bin/python3
    elif python3 -m pip install --quiet matplotlib >&2 && python3 -c 'import matplotlib'; then
        PLOTPY=python3
    else
        log "warning: no matplotlib; the chart is skipped"
    fi
fi

HAPROXY_VERSION=$(haproxy -v | sed -n 1p | awk '{print $3}')
case $HAPROXY_VERSION in
    2.[5-9]* | [3-9].*) ;;
    *) die "HAProxy $HAPROXY_VERSION has no jwt_verify (needs 2.5 or newer)" ;;
esac

if [ "$BUILD" = 1 ]; then
    log "cargo build --release --locked --bin authgate (several minutes on a small machine)"
    (cd "$ROOT" && cargo build --release --locked --bin authgate >&2)
fi
[ -x "$AUTHGATE" ] || die "no $AUTHGATE; build it or set AUTHGATE_BIN"

# ---------------------------------------------------------------- processes
ulimit -Hn 65536 2>/dev/null || true # needs CAP_SYS_RESOURCE; otherwise the hard limit stays
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=65536
[ "$NOFILE" -le 65536 ] || NOFILE=65536
ulimit -n "$NOFILE"
[ "$NOFILE" -ge $((IDLE_CONNS + 2000)) ] || die "open files limit $NOFILE is too low for $IDLE_CONNS idle connections (set BENCH_IDLE_CONNECTIONS lower)"
MAXCONN=$((IDLE_CONNS + 1000))
# HAProxy reserves two descriptors per connection (client and server side) and refuses to
# start when maxconn does not fit the open files limit.
HAP_MAXCONN=$(( (NOFILE - 200) / 2 < MAXCONN ? (NOFILE - 200) / 2 : MAXCONN ))
HAP_IDLE=$(( IDLE_CONNS < HAP_MAXCONN - 100 ? IDLE_CONNS : HAP_MAXCONN - 100 ))

W=$(mktemp -d /tmp/authgate-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP_WORKDIR:-0}" = 1 ]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU COMMAND...: runs COMMAND pinned to CPU, logs to $W/NAME.log, sets PID_NAME.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$W/$name.log" 2>&1 &
    PIDS+=("$!")
    printf -v "PID_${name//-/_}" '%s' $!
}
# stop NAME: SIGTERM and wait (bounded).
stop() {
    local var="PID_${1//-/_}" pid
    pid=${!var}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
# wait_up URL NAME: until something answers HTTP there (10 s at most).
wait_up() {
    for _ in $(seq 100); do
        curl -s -k -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    log "--- $W/$2.log:"
    tail -20 "$W/$2.log" >&2 || true
    die "$2 did not come up at $1"
}
# rss_kib PID: VmRSS of the process and its child processes.
rss_kib() {
    local total=0 p r
    for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}
# cpu_ticks "PID...": user+system clock ticks of the processes and their child processes
# (several PIDs, space-separated, for a target made of two processes: nginx + authgate).
cpu_ticks() {
    local total=0 root p t
    for root in $1; do
        for p in "$root" $(cat /proc/"$root"/task/*/children 2>/dev/null); do
            t=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}' || true)
            total=$((total + ${t:-0}))
        done
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
# core_busy_ticks CPU: non-idle clock ticks of one core so far (/proc/stat).
core_busy_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

read -r P_UP P_NGX P_HAP_HS P_HAP_ES P_AG_HS P_AG_ES P_AG_IDLE P_AG_KEYS P_NGX_AUTH P_AG_RL \
    P_AG_SHIP P_NGX_LOG P_AG_2W P_AG_TLS P_AG_TLS_PLAIN P_NGX_TLS P_AG_HOSTS \
    P_AG_FWD P_NGX_AUTH_OWN P_AG_OTEL P_OTLP P_AG_ASI P_AG_ASR P_AG_ED P_AG_EDR < <($PY -c '
import socket
socks = [socket.socket() for _ in range(25)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

# ---------------------------------------------------------------- configs
mkdir -p "$W/tmp"
# nginx_tls_listen PORT: "listen ... ssl http2" up to nginx 1.25.0, then "http2 on".
nginx_tls_listen() {
    local v
    v=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    if printf '%s\n' 1.25.1 "$v" | sort -V -C; then
        printf 'listen 127.0.0.1:%s ssl backlog=4096; http2 on;' "$1"
    else
        printf 'listen 127.0.0.1:%s ssl http2 backlog=4096;' "$1"
    fi
}
nginx_common="
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
events { worker_connections $((NOFILE - 100)); }
"
nginx_http="
    access_log off;
    default_type text/plain;
    client_body_temp_path $W/tmp/body;
    proxy_temp_path $W/tmp/proxy;
    fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi;
    scgi_temp_path $W/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
"
cat >"$W/upstream.conf" <<EOF
pid $W/upstream.pid;
error_log $W/upstream.err warn;
$nginx_common
http {
$nginx_http
    server {
        listen 127.0.0.1:$P_UP backlog=4096;
        location / { return 200 "ok"; }
    }
}
EOF
# nginx_proxy_conf NAME SERVER_DIRECTIVES: writes $W/NAME.conf, nginx proxying
# every path to the upstream over keep-alive; SERVER_DIRECTIVES (the listen
# line first) open its server block.
nginx_proxy_conf() {
    cat >"$W/$1.conf" <<EOF
pid $W/$1.pid;
error_log $W/$1.err warn;
$nginx_common
http {
$nginx_http
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 64;
    }
    server {
$2
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
nginx_proxy_conf nginx-proxy "        listen 127.0.0.1:$P_NGX backlog=4096;"
# nginx in front, authgate deciding through auth_request:
# deploy/forward-auth/nginx/authgate.conf reduced to the decision and the forward.
# nginx_authreq_conf NAME NGINX_PORT AUTHGATE_PORT
nginx_authreq_conf() {
    cat >"$W/$1.conf" <<EOF
pid $W/$1.pid;
error_log $W/$1.err warn;
$nginx_common
http {
$nginx_http
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 64;
    }
    upstream authgate {
        server 127.0.0.1:$3;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location = /_authgate_verify {
            internal;
            proxy_pass http://authgate/_authgate/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
        }
        location / {
            auth_request /_authgate_verify;
            auth_request_set \$authgate_user \$upstream_http_x_auth_user;
            auth_request_set \$authgate_roles \$upstream_http_x_auth_roles;
            auth_request_set \$authgate_method \$upstream_http_x_auth_method;
            proxy_set_header X-Auth-User \$authgate_user;
            proxy_set_header X-Auth-Roles \$authgate_roles;
            proxy_set_header X-Auth-Method \$authgate_method;
            proxy_set_header Authorization "";
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
# Sharing the proxy core with the HS256 instance (both on one core), and with
# an authgate of its own on the load core, so nginx keeps the proxy core.
nginx_authreq_conf nginx-authreq "$P_NGX_AUTH" "$P_AG_HS"
nginx_authreq_conf nginx-authreq-own "$P_NGX_AUTH_OWN" "$P_AG_FWD"

# nginx-proxy-noauth with an access log, as shipped configs have it: the peer of
# authgate-jwt-hs256-shipped (whose access log goes to $W/ag-ship.log).
nginx_proxy_conf nginx-proxy-log "        listen 127.0.0.1:$P_NGX_LOG backlog=4096;
        access_log $W/nginx-access.log combined buffer=64k;"
# TLS 1.3 with a self-signed EC P-256 certificate, the same for nginx and authgate.
# One listener each offers h2 and http/1.1 by ALPN: wrk offers no ALPN (HTTP/1.1),
# h2load asks for h2.
if [ "$RUN_HTTPS" = 1 ] || [ "$RUN_H2" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$W/tls-key.pem" -out "$W/tls-cert.pem" -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null || die "openssl req failed (the TLS certificate)"
fi
nginx_proxy_conf nginx-tls "        $(nginx_tls_listen "$P_NGX_TLS")
        ssl_certificate $W/tls-cert.pem;
        ssl_certificate_key $W/tls-key.pem;
        ssl_protocols TLSv1.3;"

openssl rand -hex 32 >"$W/jwt.secret"
SECRET=$(cat "$W/jwt.secret")
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/es256.pem" 2>/dev/null
openssl pkey -in "$W/es256.pem" -pubout -out "$W/es256.pub.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$W/eddsa.pem" 2>/dev/null
openssl pkey -in "$W/eddsa.pem" -pubout -out "$W/eddsa.pub.pem" 2>/dev/null

# HAProxy: alg pinned, signature and exp checked, Authorization removed.
haproxy_jwt_rules() { # ALG KEY
    cat <<EOF
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str $1 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$2") -m int 1 }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request del-header Authorization
    default_backend up
EOF
}
cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    ulimit-n $NOFILE
    maxconn $HAP_MAXCONN
    pidfile $W/haproxy.pid

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 600s
    timeout server 30s
    timeout http-keep-alive 600s
    maxconn $HAP_MAXCONN

frontend jwt_hs256
    bind 127.0.0.1:$P_HAP_HS
$(haproxy_jwt_rules HS256 "$SECRET")

frontend jwt_es256
    bind 127.0.0.1:$P_HAP_ES
$(haproxy_jwt_rules ES256 "$W/es256.pub.pem")

backend up
    server up 127.0.0.1:$P_UP
EOF
haproxy -c -q -f "$W/haproxy.cfg" >&2 || die "HAProxy rejects $W/haproxy.cfg"

authgate_config() { # PORT STORE JWT-SECTION [RATELIMIT-SECTION] [SERVER-TLS-SECTION]
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
shutdown_grace = 1
${5:-}

[store]
url = "sqlite://$W/$2.db"

[jwt]
issuer = "authgate"
ttl = 86400
leeway = 30
$3

[limits]
max_connections = $MAXCONN
idle_timeout = 600

[upstream]
connect_timeout = 5
timeout = 30

[cache]
max_entries = $((KEYS_COUNT * 2 > 100 ? KEYS_COUNT * 2 : 100))
ttl = 3600

[[route]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
auth = "required"
roles = []

[[route]]
path_prefix = "/public"
upstream = "http://127.0.0.1:$P_UP"
auth = "public"
${4:-}
EOF
}
# One rate-limit rule under /limited that never refuses (the bench measures
# its cost, not its refusals); requests elsewhere pass the rule's prefix
# check only. STORE: memory or a Redis URL (BENCH_REDIS_URL).
ratelimit_section() {
    cat <<EOF
[ratelimit]
store = "$1"
key_prefix = "authgate-bench:$$:"

[[ratelimit.rule]]
name = "bench"
by = "user"
rate = 1000000
burst = 1000000
path_prefix = "/limited"
EOF
}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
HS_JWT="secret_file = \"$W/jwt.secret\""
ES_JWT="
[[jwt.keys]]
kid = \"bench-es256\"
algorithm = \"ES256\"
private_key = \"$W/es256.pem\"
public_key = \"$W/es256.pub.pem\""
authgate_config "$P_AG_HS" ag-hs "$HS_JWT" "$(ratelimit_section memory)" >"$W/ag-hs.toml"
authgate_config "$P_AG_RL" ag-rl "$HS_JWT" "$(ratelimit_section "$REDIS_URL")" >"$W/ag-rl.toml"
authgate_config "$P_AG_ES" ag-es "$ES_JWT" >"$W/ag-es.toml"
ED_JWT="
[[jwt.keys]]
kid = \"bench-eddsa\"
algorithm = \"EdDSA\"
private_key = \"$W/eddsa.pem\"
public_key = \"$W/eddsa.pub.pem\""
# An EdDSA-signed gateway, and the same with an assertion signed per request.
authgate_config "$P_AG_ED" ag-ed "$ED_JWT" >"$W/ag-ed.toml"
authgate_config "$P_AG_EDR" ag-ed "$ED_JWT" "
[assertion]
audience = \"bench\"
bind = \"request\"" >"$W/ag-ed-request.toml"
# The ES256 instance again with [assertion] (signed with its ES256 key), bound
# to the caller (one signature per caller and route for half the ttl) and to
# each request (one signature per request), on the same store.
for bind in identity request; do
    port=$P_AG_ASI
    [ "$bind" = identity ] || port=$P_AG_ASR
    authgate_config "$port" ag-es "$ES_JWT" "
[assertion]
audience = \"bench\"
bind = \"$bind\"" >"$W/ag-as-$bind.toml"
done
# The public route among 1,000 routes over 200 host names (4 prefixes each
# plus 200 wildcard routes), asked with one of those hosts: routing by host
# must cost what the single-route table costs (authgate-public).
authgate_config "$P_AG_HOSTS" ag-hosts "$HS_JWT" >"$W/ag-hosts.toml"
$PY - "$P_UP" >>"$W/ag-hosts.toml" <<'PY'
import sys
up = sys.argv[1]
for h in range(200):
    for r in range(4):
        print(f'\n[[route]]\nhosts = ["h{h}.bench.test"]\npath_prefix = "/r{r}"\n'
              f'upstream = "http://127.0.0.1:{up}"\nauth = "public"\nmethods = ["GET", "HEAD"]')
    print(f'\n[[route]]\nhosts = ["*.w{h}.bench.test"]\npath_prefix = "/r0"\n'
          f'upstream = "http://127.0.0.1:{up}"\nauth = "public"')
PY
authgate_config "$P_AG_IDLE" ag-idle "$HS_JWT" >"$W/ag-idle.toml"
authgate_config "$P_AG_KEYS" ag-keys "$HS_JWT" >"$W/ag-keys.toml"
# The HS256 instance's config on other ports, on its store (one user, one token for all):
# as shipped (started without --workers and AUTHGATE_LOG), with two workers, and with
# [server.tls] (its plain listener only answers wait_up).
authgate_config "$P_AG_SHIP" ag-hs "$HS_JWT" "$(ratelimit_section memory)" >"$W/ag-ship.toml"
authgate_config "$P_AG_2W" ag-hs "$HS_JWT" "$(ratelimit_section memory)" >"$W/ag-2w.toml"
authgate_config "$P_AG_FWD" ag-hs "$HS_JWT" "$(ratelimit_section memory)" >"$W/ag-fwd.toml"
# Tracing on: the HS256 instance's config with every request sampled, spans
# sent to the OTLP/HTTP receiver of the tests (decoding, then discarding).
authgate_config "$P_AG_OTEL" ag-hs "$HS_JWT" "$(ratelimit_section memory)" >"$W/ag-otel.toml"
printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nservice_name = "authgate-bench"\nsample_ratio = 1.0\n' \
    "$P_OTLP" >>"$W/ag-otel.toml"
authgate_config "$P_AG_TLS_PLAIN" ag-hs "$HS_JWT" "$(ratelimit_section memory)" "
[server.tls]
listen = \"127.0.0.1:$P_AG_TLS\"
cert = \"$W/tls-cert.pem\"
key = \"$W/tls-key.pem\"" >"$W/ag-tls.toml"

ag() { "$AUTHGATE" "$@"; }
for cfg in ag-as-identity ag-as-request ag-ed-request; do # on ag-es's and ag-ed's stores: their user is theirs
    ag check-config --config "$W/$cfg.toml" >/dev/null || die "authgate rejects $W/$cfg.toml"
done
for cfg in ag-hs ag-es ag-ed ag-idle ag-rl ag-hosts; do
    ag check-config --config "$W/$cfg.toml" >/dev/null || die "authgate rejects $W/$cfg.toml"
    printf '%s\n' "$PASSWORD" | ag user add bench --password-stdin --config "$W/$cfg.toml" >/dev/null
done
[ "$RUN_SHIPPED" != 1 ] || ag check-config --config "$W/ag-ship.toml" >/dev/null || die "authgate rejects $W/ag-ship.toml"
[ "$RUN_2W" != 1 ] || ag check-config --config "$W/ag-2w.toml" >/dev/null || die "authgate rejects $W/ag-2w.toml"
[ "$RUN_TRACES" != 1 ] || ag check-config --config "$W/ag-otel.toml" >/dev/null || die "authgate rejects $W/ag-otel.toml"
if [ "$RUN_HTTPS" = 1 ] || [ "$RUN_H2" = 1 ]; then
    ag check-config --config "$W/ag-tls.toml" >/dev/null || die "authgate rejects $W/ag-tls.toml"
fi
HS_TOKEN=$(ag token issue --user bench --ttl 86400 --config "$W/ag-hs.toml")
RL_TOKEN=$(ag token issue --user bench --ttl 86400 --config "$W/ag-rl.toml")
ES_TOKEN=$(ag token issue --user bench --ttl 86400 --config "$W/ag-es.toml")
ED_TOKEN=$(ag token issue --user bench --ttl 86400 --config "$W/ag-ed.toml")
IDLE_TOKEN=$(ag token issue --user bench --ttl 86400 --config "$W/ag-idle.toml")
ACCESS_KEY=$(ag key create --user bench --name bench --config "$W/ag-hs.toml" | sed -n 's/^key: //p')
[ -n "$ACCESS_KEY" ] || die "authgate key create printed no key"

# ---------------------------------------------------------------- start
export AUTHGATE_LOG=warn
start upstream "$LOAD_CPU" nginx -p "$W" -e "$W/upstream.err" -c "$W/upstream.conf"
start nginx-proxy "$PROXY_CPU" nginx -p "$W" -e "$W/nginx-proxy.err" -c "$W/nginx-proxy.conf"
start nginx-authreq "$PROXY_CPU" nginx -p "$W" -e "$W/nginx-authreq.err" -c "$W/nginx-authreq.conf"
start haproxy "$PROXY_CPU" haproxy -db -f "$W/haproxy.cfg"
start ag-hs "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-hs.toml"
start ag-es "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-es.toml"
start ag-asi "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-as-identity.toml"
start ag-asr "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-as-request.toml"
start ag-ed "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-ed.toml"
start ag-edr "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-ed-request.toml"
start ag-rl "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-rl.toml"
start ag-hosts "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-hosts.toml"
# The forward-auth decider of nginx-authreq-own, on the load core (with wrk and the upstream).
start ag-fwd "$LOAD_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-fwd.toml"
start nginx-authreq-own "$PROXY_CPU" nginx -p "$W" -e "$W/nginx-authreq-own.err" -c "$W/nginx-authreq-own.conf"
wait_up "http://127.0.0.1:$P_UP/" upstream
wait_up "http://127.0.0.1:$P_NGX/" nginx-proxy
wait_up "http://127.0.0.1:$P_HAP_HS/" haproxy
wait_up "http://127.0.0.1:$P_AG_HS/healthz" ag-hs
wait_up "http://127.0.0.1:$P_AG_ES/healthz" ag-es
wait_up "http://127.0.0.1:$P_AG_ASI/healthz" ag-asi
wait_up "http://127.0.0.1:$P_AG_ASR/healthz" ag-asr
wait_up "http://127.0.0.1:$P_AG_ED/healthz" ag-ed
wait_up "http://127.0.0.1:$P_AG_EDR/healthz" ag-edr
wait_up "http://127.0.0.1:$P_NGX_AUTH/" nginx-authreq
wait_up "http://127.0.0.1:$P_AG_RL/healthz" ag-rl
wait_up "http://127.0.0.1:$P_AG_HOSTS/healthz" ag-hosts
wait_up "http://127.0.0.1:$P_AG_FWD/healthz" ag-fwd
wait_up "http://127.0.0.1:$P_NGX_AUTH_OWN/" nginx-authreq-own
if [ "$RUN_SHIPPED" = 1 ]; then
    # As a user runs it: no --workers (the affinity mask, one core, makes one), the default
    # log level with the access log on, into a file as a log collector would take it.
    start ag-ship "$PROXY_CPU" env -u AUTHGATE_LOG -u AUTHGATE_WORKERS "$AUTHGATE" serve --config "$W/ag-ship.toml"
    start nginx-proxy-log "$PROXY_CPU" nginx -p "$W" -e "$W/nginx-proxy-log.err" -c "$W/nginx-proxy-log.conf"
    wait_up "http://127.0.0.1:$P_AG_SHIP/healthz" ag-ship
    wait_up "http://127.0.0.1:$P_NGX_LOG/" nginx-proxy-log
    log "authgate as shipped: $(ls /proc/"$PID_ag_ship"/task | wc -l) threads (one runtime worker on core $PROXY_CPU, plus the log writer and helpers)"
fi
if [ "$RUN_TRACES" = 1 ]; then
    # shellcheck source=bench/lib/otlp_python.sh
    . "$LIB/otlp_python.sh"
    OTLP_PY=$(OTLP_PYTHON=${BENCH_OTLP_PYTHON:-} otlp_python "$W")
    # No OTLP_OUT: each batch is decoded and discarded. On the load core.
    start otlp "$LOAD_CPU" env -u OTLP_OUT "$OTLP_PY" "$ROOT/tests/upstreams/otlp_receiver.py" "$P_OTLP"
    start ag-otel "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-otel.toml"
    wait_up "http://127.0.0.1:$P_OTLP/" otlp
    wait_up "http://127.0.0.1:$P_AG_OTEL/healthz" ag-otel
fi
if [ "$RUN_2W" = 1 ]; then
    start ag-2w "$TWO_CPUS" "$AUTHGATE" serve --workers 2 --config "$W/ag-2w.toml"
    wait_up "http://127.0.0.1:$P_AG_2W/healthz" ag-2w
fi
if [ "$RUN_HTTPS" = 1 ] || [ "$RUN_H2" = 1 ]; then
    start ag-tls "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-tls.toml"
    start nginx-tls "$PROXY_CPU" nginx -p "$W" -e "$W/nginx-tls.err" -c "$W/nginx-tls.conf"
    wait_up "http://127.0.0.1:$P_AG_TLS_PLAIN/healthz" ag-tls
    wait_up "https://127.0.0.1:$P_AG_TLS/healthz" ag-tls
    wait_up "https://127.0.0.1:$P_NGX_TLS/" nginx-tls
fi

# ---------------------------------------------------------------- meta
DATE=$(date +%F)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/$DATE-$MACHINE
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | sed -n 1p)
{
    printf 'date\t%s\n' "$(date '+%F %H:%M %Z')"
    printf 'machine\t%s\n' "$MACHINE"
    printf 'cpu\t%s\n' "$CPU_MODEL"
    printf 'cpus\t%s%s\n' "$(nproc)" "$(lscpu | sed -n 's/^Hypervisor vendor: */, virtual (hypervisor /p' | sed 's/$/)/' | sed -n 1p)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    if [ -n "${AUTHGATE_BIN:-}" ]; then
        # Another build: the checkout's commit says nothing about it.
        printf 'authgate\t%s (AUTHGATE_BIN=%s)\n' "$(ag --version 2>/dev/null | sed -n 1p || echo '?')" "$AUTHGATE_BIN"
    else
        printf 'authgate\t%s (release build, commit %s%s)\n' "$(ag --version 2>/dev/null | sed -n 1p || echo '?')" \
            "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
            "$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ', src has uncommitted changes')"
    fi
    printf 'nginx\t%s\n' "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    printf 'haproxy\t%s\n' "$(haproxy -v | sed -n 1p | sed 's/ - https.*//')"
    printf 'wrk\t%s\n' "$(wrk -v 2>&1 | sed -n 1p | awk '{print $1, $2}')"
    [ "$RUN_H2" != 1 ] || printf 'h2load\t%s\n' "$(h2load --version 2>&1 | sed -n 1p)"
    printf 'settings\t%s\n' "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, HTTP/1.1 keep-alive; $ROUNDS interleaved rounds (order rotated each round), ${WARMUP}s warm-up per target first; medians reported$([ "$RUN_H2" != 1 ] || echo "; HTTP/2 rows: h2load -t$THREADS -c$CONNS -m$H2_STREAMS -D${DURATION}s over TLS 1.3 (ALPN h2)")$([ "$RUN_HTTPS" != 1 ] || echo "; HTTPS rows: wrk over TLS 1.3 (HTTP/1.1 keep-alive), self-signed EC P-256 certificate")"
    printf 'pinning\t%s\n' "every proxy one worker on core $PROXY_CPU (taskset; nginx worker_processes 1, haproxy nbthread 1, authgate --workers 1, AUTHGATE_LOG=warn); wrk and the upstream nginx (return 200 \"ok\") on core $LOAD_CPU$([ "$RUN_SHIPPED" != 1 ] || echo "; authgate-jwt-hs256-shipped: no --workers (default from the affinity mask: 1), default log level, access log to a file")$([ "$RUN_2W" != 1 ] || echo "; authgate-jwt-hs256-2w: --workers 2 on cores $TWO_CPUS, shared with wrk")"
    [ -z "$NOTE" ] || printf 'note\t%s\n' "$NOTE"
    printf 'command\t%s\n' "$(env | grep -E '^BENCH_' | grep -vE '^BENCH_(NOTE|KEEP_WORKDIR|OUT_DIR|BUILD|INSTALL)=' | sort | while IFS= read -r kv; do printf '%s=%q ' "${kv%%=*}" "${kv#*=}"; done)bash bench/run.sh"
} >"$W/meta.tsv"

# ---------------------------------------------------------------- wrk helpers
# wrk_run OUTFILE DURATION CONNS [wrk args...] URL
wrk_run() {
    local out=$1 dur=$2 conns=$3
    shift 3
    timeout $((dur + 60)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$conns" -d"${dur}s" --latency "$@" >"$out" 2>&1 || true
}
# wrk_parse FILE: "rps p50_ms p99_ms non2xx sockerr requests"
wrk_parse() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
        if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
        if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
        if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
        return v + 0
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /requests in/ { reqs = $1 }
    /Non-2xx or 3xx responses:/ { non = $NF }
    /Socket errors:/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%s %s %s %d %d %s\n", (rps == "" ? "-" : rps), (p50 == "" ? "-" : p50), (p99 == "" ? "-" : p99), non, err, (reqs == "" ? 0 : reqs) }
    ' "$1"
}
# h2_run OUTFILE DURATION CONNS [h2load args...] URL: HTTP/2 over TLS (ALPN h2), CONNS
# connections with H2_STREAMS streams each; per-request times go to OUTFILE.log.
h2_run() {
    local out=$1 dur=$2 conns=$3
    shift 3
    rm -f "$out.log"
    timeout $((dur + 60)) taskset -c "$LOAD_CPU" h2load -t"$THREADS" -c"$conns" -m"$H2_STREAMS" -D"$dur" \
        --log-file="$out.log" "$@" >"$out" 2>&1 || true
}
# h2_parse FILE: "rps p50_ms p99_ms non2xx errors requests" as wrk_parse; the percentiles
# come from h2load's per-request log (status -1: a failed stream, not counted).
h2_parse() {
    local p50=- p99=-
    if [ -s "$1.log" ]; then
        read -r p50 p99 < <(awk -F'\t' '$2 != -1 { print $3 }' "$1.log" | sort -n | awk '
            { v[NR] = $1 }
            END {
                if (!NR) { print "- -"; exit }
                i50 = int((NR + 1) / 2); i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
                printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
            }')
    fi
    awk -v p50="$p50" -v p99="$p99" '
    /^finished in/ { rps = $4 }
    /^requests:/ { gsub(/,/, ""); errored = $12; timeout = $14 }
    /^status codes:/ { gsub(/,/, ""); ok = $3; non = $5 + $7 + $9 }
    END { printf "%s %s %s %d %d %d\n", (rps == "" ? "-" : rps), p50, p99, non, errored + timeout, ok + non }
    ' "$1"
}
# preflight URL HEADER...: HTTP code of one GET
preflight() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}

# ---------------------------------------------------------------- targets
T_NAMES=(upstream-direct nginx-proxy-noauth haproxy-jwt-hs256 haproxy-jwt-es256
    authgate-jwt-hs256 authgate-jwt-hs256-memrule authgate-jwt-hs256-redisrule
    authgate-jwt-es256 authgate-es256-assertion-identity authgate-es256-assertion-request
    authgate-jwt-eddsa authgate-eddsa-assertion-request
    authgate-accesskey authgate-public authgate-public-hosts1000
    authgate-verify-jwt authgate-verify-accesskey nginx-authreq-authgate nginx-authreq-authgate-owncore)
if [ "$RUN_TRACES" = 1 ]; then
    # Next to the HS256 row.
    names=()
    for t in "${T_NAMES[@]}"; do
        names+=("$t")
        [ "$t" != authgate-jwt-hs256 ] || names+=(authgate-jwt-hs256-traced)
    done
    T_NAMES=("${names[@]}")
fi
[ "$RUN_SHIPPED" != 1 ] || T_NAMES+=(authgate-jwt-hs256-shipped nginx-proxy-noauth-log)
[ "$RUN_2W" != 1 ] || T_NAMES+=(authgate-jwt-hs256-2w)
[ "$RUN_HTTPS" != 1 ] || T_NAMES+=(authgate-https-hs256 nginx-https-proxy-noauth)
[ "$RUN_H2" != 1 ] || T_NAMES+=(authgate-h2-hs256 nginx-h2-proxy-noauth)
# T_TOOL: wrk (default) or h2load. T_CURL: more curl options for the pre-check; T_HTTP:
# the protocol the pre-check must have used (curl's %{http_version}). T_PEER: the row the
# "× peer" columns compare with (default nginx-proxy-noauth); T_FLAGS: "norps" (req/s not
# comparable: other cores), "nohap" (no HAProxy counterpart: TLS, HTTP/2).
declare -A T_URL T_HDR T_PID T_DESC T_TOOL T_CURL T_HTTP T_PEER T_FLAGS
T_URL[upstream-direct]="http://127.0.0.1:$P_UP/bench"
T_URL[nginx-proxy-noauth]="http://127.0.0.1:$P_NGX/bench"
T_URL[haproxy-jwt-hs256]="http://127.0.0.1:$P_HAP_HS/bench"
T_URL[haproxy-jwt-es256]="http://127.0.0.1:$P_HAP_ES/bench"
T_URL[authgate-jwt-hs256]="http://127.0.0.1:$P_AG_HS/bench"
T_URL[authgate-jwt-hs256-memrule]="http://127.0.0.1:$P_AG_HS/limited/bench"
T_URL[authgate-jwt-hs256-redisrule]="http://127.0.0.1:$P_AG_RL/limited/bench"
T_URL[authgate-jwt-es256]="http://127.0.0.1:$P_AG_ES/bench"
T_URL[authgate-jwt-eddsa]="http://127.0.0.1:$P_AG_ED/bench"
T_URL[authgate-eddsa-assertion-request]="http://127.0.0.1:$P_AG_EDR/bench"
T_HDR[authgate-jwt-eddsa]="Authorization: Bearer $ED_TOKEN"
T_HDR[authgate-eddsa-assertion-request]="Authorization: Bearer $ED_TOKEN"
T_PID[authgate-jwt-eddsa]=$PID_ag_ed
T_PID[authgate-eddsa-assertion-request]=$PID_ag_edr
T_DESC[authgate-jwt-eddsa]="Bearer EdDSA (Ed25519) JWT ([[jwt.keys]])"
T_DESC[authgate-eddsa-assertion-request]="authgate-jwt-eddsa with [assertion] bind = \"request\": an Ed25519 signature per request (htm, htu, jti)"
T_URL[authgate-es256-assertion-identity]="http://127.0.0.1:$P_AG_ASI/bench"
T_URL[authgate-es256-assertion-request]="http://127.0.0.1:$P_AG_ASR/bench"
T_HDR[authgate-es256-assertion-identity]="Authorization: Bearer $ES_TOKEN"
T_HDR[authgate-es256-assertion-request]="Authorization: Bearer $ES_TOKEN"
T_PID[authgate-es256-assertion-identity]=$PID_ag_asi
T_PID[authgate-es256-assertion-request]=$PID_ag_asr
T_DESC[authgate-es256-assertion-identity]="authgate-jwt-es256 with [assertion] bind = \"identity\": an ES256-signed X-Auth-Assertion, reused per caller and route for half its ttl"
T_DESC[authgate-es256-assertion-request]="authgate-jwt-es256 with [assertion] bind = \"request\": an ES256 signature per request (htm, htu, jti)"
T_URL[authgate-accesskey]="http://127.0.0.1:$P_AG_HS/bench?accesskey=$ACCESS_KEY"
T_URL[authgate-public]="http://127.0.0.1:$P_AG_HS/public/bench"
T_URL[authgate-public-hosts1000]="http://127.0.0.1:$P_AG_HOSTS/r3/bench"
T_HDR[authgate-public-hosts1000]="Host: h137.bench.test"
T_PID[authgate-public-hosts1000]=$PID_ag_hosts
T_DESC[authgate-public-hosts1000]="public route among 1,000 routes over 200 hosts (Host: h137.bench.test)"
# Forward authentication: decisions only (Envoy's path-prefix form), and nginx asking authgate.
T_URL[authgate-verify-jwt]="http://127.0.0.1:$P_AG_HS/_authgate/verify/bench"
T_URL[authgate-verify-accesskey]="http://127.0.0.1:$P_AG_HS/_authgate/verify/bench?accesskey=$ACCESS_KEY"
T_URL[nginx-authreq-authgate]="http://127.0.0.1:$P_NGX_AUTH/bench"
T_URL[nginx-authreq-authgate-owncore]="http://127.0.0.1:$P_NGX_AUTH_OWN/bench"
T_HDR[nginx-authreq-authgate-owncore]="Authorization: Bearer $HS_TOKEN"
T_PID[nginx-authreq-authgate-owncore]="$PID_nginx_authreq_own $PID_ag_fwd"
T_DESC[nginx-authreq-authgate-owncore]="nginx auth_request -> authgate verify (HS256 JWT), nginx alone on the proxy core, authgate on the load core (with wrk and the upstream); CPU of both"
T_HDR[haproxy-jwt-hs256]="Authorization: Bearer $HS_TOKEN"
T_HDR[haproxy-jwt-es256]="Authorization: Bearer $ES_TOKEN"
T_HDR[authgate-jwt-hs256]="Authorization: Bearer $HS_TOKEN"
T_HDR[authgate-jwt-hs256-memrule]="Authorization: Bearer $HS_TOKEN"
T_HDR[authgate-jwt-hs256-redisrule]="Authorization: Bearer $RL_TOKEN"
T_HDR[authgate-jwt-es256]="Authorization: Bearer $ES_TOKEN"
T_HDR[authgate-verify-jwt]="Authorization: Bearer $HS_TOKEN"
T_HDR[nginx-authreq-authgate]="Authorization: Bearer $HS_TOKEN"
T_PID[upstream-direct]=$PID_upstream
T_PID[nginx-proxy-noauth]=$PID_nginx_proxy
T_PID[haproxy-jwt-hs256]=$PID_haproxy
T_PID[haproxy-jwt-es256]=$PID_haproxy
T_PID[authgate-jwt-hs256]=$PID_ag_hs
T_PID[authgate-jwt-hs256-memrule]=$PID_ag_hs
T_PID[authgate-jwt-hs256-redisrule]=$PID_ag_rl
T_PID[authgate-jwt-es256]=$PID_ag_es
T_PID[authgate-accesskey]=$PID_ag_hs
T_PID[authgate-public]=$PID_ag_hs
T_PID[authgate-verify-jwt]=$PID_ag_hs
T_PID[authgate-verify-accesskey]=$PID_ag_hs
# Both processes of the pair: the CPU per request is nginx's plus authgate's.
T_PID[nginx-authreq-authgate]="$PID_nginx_authreq $PID_ag_hs"
T_DESC[upstream-direct]="the upstream itself (the limit; runs on the load core)"
T_DESC[nginx-proxy-noauth]="nginx proxy_pass, upstream keep-alive, no auth"
T_DESC[haproxy-jwt-hs256]="HAProxy jwt_verify HS256: alg, signature, exp; Authorization removed"
T_DESC[haproxy-jwt-es256]="HAProxy jwt_verify ES256: alg, signature, exp; Authorization removed"
T_DESC[authgate-jwt-hs256]="Bearer HS256 JWT"
T_DESC[authgate-jwt-hs256-memrule]="Bearer HS256 JWT under one memory rate-limit rule (by user)"
T_DESC[authgate-jwt-hs256-redisrule]="Bearer HS256 JWT under one Redis rate-limit rule (by user; Redis on the load core)"
T_DESC[authgate-jwt-es256]="Bearer ES256 JWT ([[jwt.keys]])"
T_DESC[authgate-accesskey]="?accesskey= (one key, repeated)"
T_DESC[authgate-public]="public route, no credential"
T_DESC[authgate-verify-jwt]="decision only: /_authgate/verify/PATH, Bearer HS256 JWT (cached)"
T_DESC[authgate-verify-accesskey]="decision only: /_authgate/verify/PATH?accesskey= (cached)"
T_DESC[nginx-authreq-authgate]="nginx auth_request -> authgate verify (HS256 JWT), then proxy_pass; CPU of both"
if [ "$RUN_SHIPPED" = 1 ]; then
    T_URL[authgate-jwt-hs256-shipped]="http://127.0.0.1:$P_AG_SHIP/bench"
    T_URL[nginx-proxy-noauth-log]="http://127.0.0.1:$P_NGX_LOG/bench"
    T_HDR[authgate-jwt-hs256-shipped]="Authorization: Bearer $HS_TOKEN"
    T_PID[authgate-jwt-hs256-shipped]=$PID_ag_ship
    T_PID[nginx-proxy-noauth-log]=$PID_nginx_proxy_log
    T_PEER[nginx-proxy-noauth-log]=nginx-proxy-noauth
    T_PEER[authgate-jwt-hs256-shipped]=nginx-proxy-noauth-log
    T_DESC[authgate-jwt-hs256-shipped]="Bearer HS256 JWT, as shipped: no --workers (1 from the affinity mask), default log level, access log to a file"
    T_DESC[nginx-proxy-noauth-log]="nginx proxy_pass as nginx-proxy-noauth, access_log combined buffer=64k to a file"
fi
if [ "$RUN_TRACES" = 1 ]; then
    T_URL[authgate-jwt-hs256-traced]="http://127.0.0.1:$P_AG_OTEL/bench"
    T_HDR[authgate-jwt-hs256-traced]="Authorization: Bearer $HS_TOKEN"
    T_PID[authgate-jwt-hs256-traced]=$PID_ag_otel
    T_DESC[authgate-jwt-hs256-traced]="Bearer HS256 JWT, [telemetry] sample_ratio 1.0: server + upstream spans, OTLP/HTTP to a local receiver (Python, on the load core)"
fi
if [ "$RUN_2W" = 1 ]; then
    T_URL[authgate-jwt-hs256-2w]="http://127.0.0.1:$P_AG_2W/bench"
    T_HDR[authgate-jwt-hs256-2w]="Authorization: Bearer $HS_TOKEN"
    T_PID[authgate-jwt-hs256-2w]=$PID_ag_2w
    T_PEER[authgate-jwt-hs256-2w]=nginx-proxy-noauth
    T_FLAGS[authgate-jwt-hs256-2w]=norps
    T_DESC[authgate-jwt-hs256-2w]="Bearer HS256 JWT, --workers 2 on cores $TWO_CPUS (shared with wrk: compare CPU/req only)"
fi
if [ "$RUN_HTTPS" = 1 ]; then
    T_URL[authgate-https-hs256]="https://127.0.0.1:$P_AG_TLS/bench"
    T_URL[nginx-https-proxy-noauth]="https://127.0.0.1:$P_NGX_TLS/bench"
    T_HDR[authgate-https-hs256]="Authorization: Bearer $HS_TOKEN"
    T_PID[authgate-https-hs256]=$PID_ag_tls
    T_PID[nginx-https-proxy-noauth]=$PID_nginx_tls
    for t in authgate-https-hs256 nginx-https-proxy-noauth; do
        T_CURL[$t]="-k --http1.1 --tlsv1.3"
        T_HTTP[$t]=1.1
        T_FLAGS[$t]=nohap
    done
    T_PEER[authgate-https-hs256]=nginx-https-proxy-noauth
    T_DESC[authgate-https-hs256]="Bearer HS256 JWT over TLS 1.3 ([server.tls], HTTP/1.1 keep-alive), plain HTTP upstream"
    T_DESC[nginx-https-proxy-noauth]="nginx listen ssl, TLSv1.3, same certificate, proxy_pass with upstream keep-alive, no auth"
fi
if [ "$RUN_H2" = 1 ]; then
    T_URL[authgate-h2-hs256]="https://127.0.0.1:$P_AG_TLS/bench"
    T_URL[nginx-h2-proxy-noauth]="https://127.0.0.1:$P_NGX_TLS/bench"
    T_HDR[authgate-h2-hs256]="Authorization: Bearer $HS_TOKEN"
    T_PID[authgate-h2-hs256]=$PID_ag_tls
    T_PID[nginx-h2-proxy-noauth]=$PID_nginx_tls
    for t in authgate-h2-hs256 nginx-h2-proxy-noauth; do
        T_TOOL[$t]=h2load
        T_CURL[$t]="-k --http2 --tlsv1.3"
        T_HTTP[$t]=2
        T_FLAGS[$t]=nohap
    done
    T_PEER[authgate-h2-hs256]=nginx-h2-proxy-noauth
    T_DESC[authgate-h2-hs256]="Bearer HS256 JWT, HTTP/2 over TLS 1.3 (ALPN h2, h2load -m$H2_STREAMS), the same listener"
    T_DESC[nginx-h2-proxy-noauth]="nginx listen ssl with http2, TLSv1.3, proxy_pass with upstream keep-alive, no auth (h2load -m$H2_STREAMS)"
fi
[ "$RUN_THROUGHPUT" != 1 ] || for t in "${T_NAMES[@]}"; do
    printf '%s\t%s\t%s\t%s\n' "$t" "${T_DESC[$t]}" "${T_PEER[$t]:-nginx-proxy-noauth}" "${T_FLAGS[$t]:-}"
done >"$W/targets.tsv"

# A credential with one signature/key character changed: must be refused.
tamper() {
    local s=$1 i c
    i=$((${#s} - 10))
    c=${s:$i:1}
    [ "$c" = A ] && c=B || c=A
    printf '%s' "${s:0:$i}$c${s:$((i + 1))}"
}
declare -A T_BAD_URL T_BAD_HDR
for t in haproxy-jwt-hs256 haproxy-jwt-es256 authgate-jwt-hs256 authgate-jwt-hs256-memrule \
    authgate-jwt-hs256-redisrule authgate-jwt-es256 authgate-verify-jwt nginx-authreq-authgate \
    authgate-jwt-hs256-shipped authgate-jwt-hs256-2w authgate-https-hs256 authgate-h2-hs256; do
    [ -n "${T_URL[$t]:-}" ] || continue
    T_BAD_URL[$t]=${T_URL[$t]}
    T_BAD_HDR[$t]=$(tamper "${T_HDR[$t]}")
done
T_BAD_URL[authgate-accesskey]=$(tamper "${T_URL[authgate-accesskey]}")
T_BAD_HDR[authgate-accesskey]=
T_BAD_URL[authgate-verify-accesskey]=$(tamper "${T_URL[authgate-verify-accesskey]}")
T_BAD_HDR[authgate-verify-accesskey]=

hdr_args() { # TARGET -> curl/wrk header arguments, one per line
    [ -z "${T_HDR[$1]:-}" ] || printf '%s\n%s\n' -H "${T_HDR[$1]}"
}

# precheck TARGET URL HEADER-ARGS...: HTTP code of one GET with the target's curl options;
# "alpn-got-http-V" when the target needs a protocol (T_HTTP) and curl spoke another.
precheck() {
    local t=$1 url=$2 out copts=()
    shift 2
    read -r -a copts <<<"${T_CURL[$t]:-}"
    out=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 "${copts[@]}" "$@" "$url" || true)
    if [ -n "${T_HTTP[$t]:-}" ] && [ "${out#* }" != "${T_HTTP[$t]}" ]; then
        echo "alpn-got-http-${out#* }"
    else
        echo "${out% *}"
    fi
}

# measure TARGET ROUND DURATION RECORD(0/1)
measure() {
    local t=$1 round=$2 dur=$3 record=$4 code args=() before after file
    mapfile -t args < <(hdr_args "$t")
    code=$(precheck "$t" "${T_URL[$t]}" "${args[@]}")
    if [ "$code" = 200 ] && [ -n "${T_BAD_URL[$t]:-}" ]; then
        local bad_code bad_args=()
        [ -z "${T_BAD_HDR[$t]}" ] || bad_args=(-H "${T_BAD_HDR[$t]}")
        bad_code=$(precheck "$t" "${T_BAD_URL[$t]}" "${bad_args[@]}")
        case $bad_code in
            401 | 403) ;;
            *) code="tampered-credential-got-$bad_code" ;;
        esac
    fi
    [ "$record" = 1 ] && printf '%s\t%s\t%s\n' "$t" "$round" "$code" >>"$W/preflight.tsv"
    if [ "$code" != 200 ]; then
        log "$t: pre-check answered HTTP $code, not measured (round $round)"
        return 0
    fi
    file=$W/wrk-$t-$round.txt
    local core_before core_after others t0 wall
    core_before=$(core_busy_ticks "$PROXY_CPU")
    before=$(cpu_ticks "${T_PID[$t]}")
    t0=$(date +%s%N)
    if [ "${T_TOOL[$t]:-wrk}" = h2load ]; then
        h2_run "$file" "$dur" "$CONNS" "${args[@]}" "${T_URL[$t]}"
    else
        wrk_run "$file" "$dur" "$CONNS" "${args[@]}" "${T_URL[$t]}"
    fi
    wall=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.3f", ns / 1e9 }')
    after=$(cpu_ticks "${T_PID[$t]}")
    core_after=$(core_busy_ticks "$PROXY_CPU")
    [ "$record" = 1 ] || return 0
    if [ "${T_TOOL[$t]:-wrk}" = h2load ]; then
        read -r rps p50 p99 non err reqs < <(h2_parse "$file")
        local proto
        proto=$(sed -n 's/^TLS Protocol: //p; s/^Application protocol: //p' "$file" | paste -sd' ')
        if [ "$proto" != "TLSv1.3 h2" ]; then
            log "$t: h2load negotiated '$proto', not 'TLSv1.3 h2': this target's run is INVALID"
            printf '%s\t%s\t%s\n' "$t" "$round" "h2load-negotiated-${proto// /-}" >>"$W/preflight.tsv"
        fi
    else
        read -r rps p50 p99 non err reqs < <(wrk_parse "$file")
    fi
    local cpu_us busy
    cpu_us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
    busy=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v s="$wall" 'BEGIN { printf "%.1f", d / hz / s * 100 }')
    # What else ran on the proxy core meanwhile (other processes; for upstream-direct, everything).
    if [[ " ${T_FLAGS[$t]:-} " == *" norps "* ]]; then
        others=- # on several cores: the proxy core's remainder says nothing
    elif [ "$t" = upstream-direct ]; then
        others=$(awk -v d=$((core_after - core_before)) -v hz="$CLK_TCK" -v s="$wall" 'BEGIN { printf "%.1f", d / hz / s * 100 }')
    else
        others=$(awk -v d=$((core_after - core_before - after + before)) -v hz="$CLK_TCK" -v s="$wall" 'BEGIN { v = d / hz / s * 100; printf "%.1f", (v < 0 ? 0 : v) }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$round" "$rps" "$p50" "$p99" "$non" "$err" "$reqs" "$cpu_us" "$busy" "$others" >>"$W/raw.tsv"
    log "$t round $round: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, non-2xx $non, socket errors $err, ${cpu_us} µs CPU/req, core busy ${busy}%, others ${others}%"
    [ "$non" = 0 ] || log "$t: $non non-2xx answers: this target's run is INVALID"
}

# ---------------------------------------------------------------- idle connections
if [ "$RUN_IDLE" = 1 ]; then
    log "idle connections: $IDLE_CONNS per target"
    start ag-idle "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-idle.toml"
    wait_up "http://127.0.0.1:$P_AG_IDLE/healthz" ag-idle
    idle_one() { # NAME PORT PID COUNT [HEADER]
        local name=$1 port=$2 pid=$3 count=$4 hdr=() out
        [ -z "${5:-}" ] || hdr=(--header "$5")
        out=$(timeout 300 taskset -c "$LOAD_CPU" $PY "$LIB/idle_conns.py" --port "$port" --path /bench \
            "${hdr[@]}" --count "$count" --pid "$pid") || out=
        if [ -n "$out" ]; then
            printf '%s\t%s\n' "$name" "$out" >>"$W/idle.tsv"
            log "idle $name: $out"
        else
            log "idle $name: the client failed"
        fi
    }
    idle_one authgate-jwt-hs256 "$P_AG_IDLE" "$PID_ag_idle" "$IDLE_CONNS" "Authorization: Bearer $IDLE_TOKEN"
    stop ag-idle
    if [ "$HAP_IDLE" != "$IDLE_CONNS" ]; then
        echo "HAProxy gets $HAP_IDLE connections, not $IDLE_CONNS: it reserves two file descriptors per connection and will not start with a maxconn ($HAP_MAXCONN here) that does not fit the open files limit ($NOFILE, the hard limit on this machine)." >"$W/idle_note.md"
        log "$(cat "$W/idle_note.md")"
    fi
    idle_one haproxy-jwt-hs256 "$P_HAP_HS" "$PID_haproxy" "$HAP_IDLE" "Authorization: Bearer $HS_TOKEN"
    idle_one nginx-proxy-noauth "$P_NGX" "$PID_nginx_proxy" "$IDLE_CONNS"
fi

# ---------------------------------------------------------------- throughput
if [ "$RUN_THROUGHPUT" = 1 ]; then
    if [ "$WARMUP" -gt 0 ]; then
        log "warm-up: ${WARMUP}s per target"
        for t in "${T_NAMES[@]}"; do measure "$t" 0 "$WARMUP" 0; done
    fi
    n=${#T_NAMES[@]}
    for round in $(seq 1 "$ROUNDS"); do
        log "round $round of $ROUNDS"
        for i in $(seq 0 $((n - 1))); do
            measure "${T_NAMES[$(((i + round - 1) % n))]}" "$round" "$DURATION" 1
        done
    done
    {
        printf 'nginx-proxy-noauth\t%s\n' "$(rss_kib "$PID_nginx_proxy")"
        printf 'haproxy (both frontends)\t%s\n' "$(rss_kib "$PID_haproxy")"
        printf 'authgate-hs256\t%s\n' "$(rss_kib "$PID_ag_hs")"
        printf 'authgate-es256\t%s\n' "$(rss_kib "$PID_ag_es")"
        [ "$RUN_TRACES" != 1 ] || printf 'authgate-hs256-traced\t%s\n' "$(rss_kib "$PID_ag_otel")"
    } >"$W/rss_load.tsv"
    # Spans the traced instance exported, and dropped (its queue was full:
    # the receiver did not keep up), over the whole run.
    [ "$RUN_TRACES" != 1 ] || log "authgate-jwt-hs256-traced spans: $(curl -s --max-time 5 "http://127.0.0.1:$P_AG_OTEL/metrics" | grep '^authgate_trace_spans_total' | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- latency at fixed rates
# p50/p99/p99.9 at 50% and 90% of authgate-jwt-hs256's peak (its median req/s above),
# the same request rates for nginx and HAProxy: oha -q holds the rate, and with
# --latency-correction a late answer counts from when its request was due
# (coordinated omission). oha comes from crates.io (BENCH_OHA names another binary).
if [ "$RUN_LATENCY" = 1 ] && [ "$RUN_THROUGHPUT" = 1 ]; then
    if ! command -v "$OHA" >/dev/null; then
        log "installing oha $OHA_VERSION from crates.io into $W/oha"
        cargo install oha --locked --version "$OHA_VERSION" --root "$W/oha" >&2 || die "cargo install oha failed"
        OHA=$W/oha/bin/oha
    fi
    peak=$(awk -F'\t' '$1 == "authgate-jwt-hs256" && $3 != "-" { print $3 }' "$W/raw.tsv" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR) print int(v[int((NR + 1) / 2)]) }')
    latency_targets=(nginx-proxy-noauth haproxy-jwt-hs256 authgate-jwt-hs256)
    [ "$RUN_SHIPPED" != 1 ] || latency_targets+=(authgate-jwt-hs256-shipped)
    if [ -n "$peak" ] && [ "$peak" -gt 0 ]; then
        for pct in 50 90; do
            rate=$((peak * pct / 100))
            for t in "${latency_targets[@]}"; do
                mapfile -t args < <(hdr_args "$t")
                oha_args=()
                for ((i = 0; i < ${#args[@]}; i += 2)); do oha_args+=(-H "${args[i + 1]}"); done
                out=$W/oha-$t-$pct.json
                timeout $((LATENCY_DURATION + 60)) taskset -c "$LOAD_CPU" "$OHA" -z "${LATENCY_DURATION}s" \
                    -q "$rate" -c "$CONNS" --latency-correction --no-tui --output-format json \
                    "${oha_args[@]}" "${T_URL[$t]}" >"$out" 2>"$out.err" || true
                line=$($PY - "$out" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("- - - - -"); sys.exit()
p = d.get("latencyPercentiles", {})
codes = d.get("statusCodeDistribution", {})
ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
other = sum(codes.values()) - ok
ms = lambda v: "-" if v is None else f"{v * 1000:.2f}"
print(f'{d["summary"].get("requestsPerSec", 0):.0f} {ms(p.get("p50"))} {ms(p.get("p99"))} {ms(p.get("p99.9"))} {other}')
PY
)
                printf '%s\t%s\t%s\t%s\n' "$t" "$pct" "$rate" "$line" >>"$W/latency.tsv"
                log "latency $t at ${pct}% ($rate req/s): $line (achieved req/s, p50, p99, p99.9 ms, non-2xx)"
            done
        done
        {
            echo "## Latency at fixed request rates"
            echo
            echo "oha \`-q\` at 50% and 90% of authgate-jwt-hs256's median peak ($peak req/s), $LATENCY_DURATION s each,"
            echo "$CONNS connections, \`--latency-correction\` (latency counted from when a request was due)."
            echo
            echo "| target | load | rate req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | non-2xx |"
            echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            while IFS=$'\t' read -r t pct rate line; do
                read -r got p50 p99 p999 other <<<"$line"
                echo "| $t | ${pct}% | $rate | $got | $p50 | $p99 | $p999 | $other |"
            done <"$W/latency.tsv"
        } >"$W/latency.md"
    else
        log "latency: no peak for authgate-jwt-hs256, skipped"
    fi
fi

# ---------------------------------------------------------------- login
if [ "$RUN_LOGIN" = 1 ]; then
    log "POST /auth/login: ${DURATION}s, $LOGIN_CONNS connections"
    login_url="http://127.0.0.1:$P_AG_HS/auth/login"
    body="{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' -d "$body" "$login_url" || true)
    params=$($PY -c '
import sqlite3, sys
h = sqlite3.connect(sys.argv[1]).execute("SELECT password_hash FROM users WHERE username = ?", ("bench",)).fetchone()[0]
print("$".join(h.split("$")[:4]))' "$W/ag-hs.db")
    singles=()
    for _ in $(seq 10); do
        singles+=("$(curl -s -o /dev/null -w '%{time_total}' --max-time 10 -H 'Content-Type: application/json' -d "$body" "$login_url")")
    done
    single_ms=$(printf '%s\n' "${singles[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) * 1000 }')
    before=$(cpu_ticks "$PID_ag_hs")
    BENCH_LOGIN_USER=bench BENCH_LOGIN_PASSWORD=$PASSWORD \
        wrk_run "$W/wrk-login.txt" "$DURATION" "$LOGIN_CONNS" -s "$LIB/login.lua" "$login_url"
    after=$(cpu_ticks "$PID_ag_hs")
    read -r rps p50 p99 non err reqs < <(wrk_parse "$W/wrk-login.txt")
    cpu_ms=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e3 / n; else print "-" }')
    log "login: pre-check HTTP $code, $rps logins/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non, ${cpu_ms} ms CPU/login"
    {
        echo "## Cost of \`POST /auth/login\`"
        echo ""
        echo "Password hashes are argon2id with the parameters stored in the hash: \`$params\` (memory in KiB, iterations, lanes)."
        echo "The gateway is the HS256 instance above (one worker thread, core $PROXY_CPU); wrk posts"
        echo "\`{\"username\",\"password\"}\` with the right password on $LOGIN_CONNS keep-alive connections for ${DURATION}s."
        echo ""
        echo "| measure | value |"
        echo "| --- | ---: |"
        echo "| pre-check (one curl login) | HTTP $code |"
        echo "| single login, one at a time (median of 10 curl requests, incl. connection) | $single_ms ms |"
        echo "| logins/s under load | $rps |"
        echo "| p50 / p99 under load | $p50 / $p99 ms |"
        echo "| CPU per login (all gateway threads, /proc) | $cpu_ms ms |"
        echo "| non-2xx / socket errors | $non / $err |"
        [ "$non" = 0 ] || echo "| **INVALID** | $non logins were refused |"
    } >"$W/login.md"
fi

# ---------------------------------------------------------------- many access keys
if [ "$RUN_KEYS" = 1 ]; then
    log "access keys: seeding $KEYS_COUNT keys into a fresh store"
    printf '%s\n' "$PASSWORD" | ag user add bench --password-stdin --config "$W/ag-keys.toml" >/dev/null
    # What one key costs through the CLI (a process, store open, insert): why 1M are seeded directly.
    cli_start=$(date +%s%N)
    for i in $(seq 10); do ag key create --user bench --name "cli-$i" --config "$W/ag-keys.toml" >/dev/null; done
    cli_ms=$(( ($(date +%s%N) - cli_start) / 10000000 ))
    seed_out=$($PY "$LIB/seed_keys.py" "$W/ag-keys.db" bench "$KEYS_COUNT" "$W/keys.txt")
    log "$seed_out"
    start ag-keys "$PROXY_CPU" "$AUTHGATE" serve --workers 1 --config "$W/ag-keys.toml"
    wait_up "http://127.0.0.1:$P_AG_KEYS/healthz" ag-keys
    keys_url="http://127.0.0.1:$P_AG_KEYS/bench"
    first_key=$(head -1 "$W/keys.txt")
    code=$(preflight "$keys_url?accesskey=$first_key")
    rss0=$(rss_kib "$PID_ag_keys")
    cached() { curl -s --max-time 5 "http://127.0.0.1:$P_AG_KEYS/metrics" | awk '/^authgate_cache_accesskeys / {print $2}' || true; }
    log "access keys: requesting $KEYS_WARM distinct keys once each (cache fill, at most ${KEYS_FILL_LIMIT}s)"
    fill_start=$(date +%s%N)
    BENCH_KEYS_FILE=$W/keys.txt BENCH_KEYS_MODE=seq BENCH_KEYS_LIMIT=$KEYS_WARM \
        timeout $((KEYS_FILL_LIMIT + 30)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${KEYS_FILL_LIMIT}s" --latency -s "$LIB/keys.lua" "$keys_url" >"$W/wrk-keys-fill.txt" 2>&1 &
    fill_pid=$!
    PIDS+=("$fill_pid")
    # wrk keeps running until -d even when the script has stopped its thread: watch the cache instead.
    while kill -0 "$fill_pid" 2>/dev/null; do
        sleep 2
        n_cached=$(cached)
        if [ "${n_cached:-0}" -ge "$KEYS_WARM" ]; then
            sleep 1
            kill -TERM "$fill_pid" 2>/dev/null || true
            break
        fi
    done
    wait "$fill_pid" 2>/dev/null || true
    fill_s=$(awk -v ns=$(($(date +%s%N) - fill_start)) 'BEGIN { printf "%.1f", ns / 1e9 }')
    n_cached=$(cached)
    rss1=$(rss_kib "$PID_ag_keys")
    fill_rate=$(awk -v n="${n_cached:-0}" -v s="$fill_s" 'BEGIN { printf "%.0f", n / s }')
    log "access keys: $n_cached cached in ${fill_s}s; RSS $rss0 -> $rss1 KiB"
    log "access keys: ${DURATION}s of random cached keys"
    before=$(cpu_ticks "$PID_ag_keys")
    BENCH_KEYS_FILE=$W/keys.txt BENCH_KEYS_MODE=random BENCH_KEYS_LIMIT=$KEYS_WARM \
        wrk_run "$W/wrk-keys-hot.txt" "$DURATION" "$CONNS" -s "$LIB/keys.lua" "$keys_url"
    after=$(cpu_ticks "$PID_ag_keys")
    read -r rps p50 p99 non err reqs < <(wrk_parse "$W/wrk-keys-hot.txt")
    cpu_us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
    rss2=$(rss_kib "$PID_ag_keys")
    # The same script with one key: wrk's Lua request() costs the load core time too, so this,
    # not the plain authgate-accesskey run, is the like-for-like baseline.
    log "access keys: ${DURATION}s of one cached key through the same script"
    before=$(cpu_ticks "$PID_ag_keys")
    BENCH_KEYS_FILE=$W/keys.txt BENCH_KEYS_MODE=random BENCH_KEYS_LIMIT=1 \
        wrk_run "$W/wrk-keys-one.txt" "$DURATION" "$CONNS" -s "$LIB/keys.lua" "$keys_url"
    after=$(cpu_ticks "$PID_ag_keys")
    read -r rps1 p501 p991 non1 err1 reqs1 < <(wrk_parse "$W/wrk-keys-one.txt")
    cpu_us1=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$reqs1" 'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
    stop ag-keys
    log "access keys hot: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non"
    single=$(awk -F'\t' '$1 == "authgate-accesskey" { print $3 }' "$W/raw.tsv" 2>/dev/null | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }' || true)
    {
        echo "## Access keys: memory and lookup time with $KEYS_WARM keys cached"
        echo ""
        echo "$KEYS_COUNT keys of one user are written straight into a fresh SQLite store (\`bench/lib/seed_keys.py\`, the rows the gateway itself writes: SHA-256 hex of the key, first 11 characters);"
        echo "through the CLI one \`authgate key create\` took $cli_ms ms here (a process, store open and insert each), so $KEYS_COUNT keys that way would take about $(awk -v ms="$cli_ms" -v n="$KEYS_COUNT" 'BEGIN { printf "%.1f", ms * n / 3.6e6 }') h."
        echo "A fresh gateway (\`[cache] max_entries = $((KEYS_COUNT * 2)), ttl = 3600\`) then gets one request per key for $KEYS_WARM distinct keys ($CONNS connections, each key a cache miss and a store lookup),"
        echo "and then ${DURATION}s of requests with keys drawn at random from those (cache hits), and ${DURATION}s with one key through the same Lua script."
        echo "The Lua \`request()\` hook makes wrk slower on the shared load core, so compare CPU per request (gateway process, /proc) rather than req/s."
        echo ""
        echo "| measure | value |"
        echo "| --- | ---: |"
        echo "| pre-check (first key) | HTTP $code |"
        echo "| keys in the store | $KEYS_COUNT (+ 10 from the CLI) |"
        echo "| keys in the cache after the fill (\`authgate_cache_accesskeys\`) | ${n_cached:-?} |"
        echo "| RSS before the fill | $(awk -v k="$rss0" 'BEGIN { printf "%.1f", k / 1024 }') MiB |"
        echo "| RSS with the keys cached | $(awk -v k="$rss1" 'BEGIN { printf "%.1f", k / 1024 }') MiB |"
        echo "| RSS after the random-key run | $(awk -v k="$rss2" 'BEGIN { printf "%.1f", k / 1024 }') MiB |"
        echo "| cache fill: time / rate (misses, store lookups) | ${fill_s} s / $fill_rate keys/s |"
        echo "| cached random keys: req/s | $rps |"
        echo "| cached random keys: p50 / p99 | $p50 / $p99 ms |"
        echo "| cached random keys: CPU per request | $cpu_us µs |"
        echo "| one cached key, same script: req/s | $rps1 |"
        echo "| one cached key, same script: p50 / p99 | $p501 / $p991 ms |"
        echo "| one cached key, same script: CPU per request | $cpu_us1 µs |"
        echo "| one repeated key without a script (\`authgate-accesskey\` above): req/s | ${single:-not measured} |"
        echo "| non-2xx / socket errors (random keys; one key) | $non / $err; $non1 / $err1 |"
        [ "$non" = 0 ] && [ "$non1" = 0 ] || echo "| **INVALID** | $((non + non1)) requests were refused |"
        [ "${n_cached:-0}" -ge "$KEYS_WARM" ] || echo "| **incomplete** | the fill stopped after ${KEYS_FILL_LIMIT}s with ${n_cached:-0} of $KEYS_WARM keys cached |"
    } >"$W/keys.md"
fi

# ---------------------------------------------------------------- report
printf 'load\t%s\n' "load average (1, 5, 15 min) at start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; anything else running competes for both cores)" >>"$W/meta.tsv"
$PY "$LIB/report.py" "$W" "$OUT.md" "$W/chart.tsv"
if [ -s "$W/chart.tsv" ] && [ -n "$PLOTPY" ]; then
    $PLOTPY "$LIB/chart.py" "$W/chart.tsv" "$OUT.png" \
        "authgate bench $DATE, $MACHINE ($CPU_MODEL): wrk -c$CONNS -d${DURATION}s x $ROUNDS rounds, each proxy 1 worker on core $PROXY_CPU$([ "$RUN_2W" != 1 ] || echo " (-2w: 2 on cores $TWO_CPUS)")$([ "$RUN_H2" != 1 ] || echo "; h2 rows: h2load -m$H2_STREAMS")"
    sed -i "0,/^## Throughput and latency/s||![chart]($(basename "$OUT").png)\n\n## Throughput and latency|" "$OUT.md"
fi
cat "$OUT.md"
log "results: $OUT.md${PLOTPY:+ and $OUT.png}"
if grep -q 'INVALID' "$OUT.md"; then
    log "the run is INVALID for some targets (see the table)"
    exit 2
fi
