#!/usr/bin/env bash
# Memory per idle connection: opens N keep-alive connections (one request
# each, then idle) and N idle WebSockets through each proxy, and reports the
# proxy's VmRSS before, with them open, per connection, and after they close.
#
#   bash bench/idle_connections.sh                 # 10,000 of each
#   IDLE_COUNT=2000 bash bench/idle_connections.sh # quicker
#
# Targets: authgate (HS256 JWT on every request and handshake; --workers 1),
# nginx (proxy_pass, no auth) and HAProxy (jwt_verify HS256) when installed.
# Knobs: IDLE_COUNT (10000), IDLE_SETTLE (3 s before reading RSS),
# IDLE_CLOSE_SETTLE (5 s after closing), AUTHGATE_BIN (else a release build),
# IDLE_TARGETS ("authgate nginx haproxy"), IDLE_KINDS ("http ws"),
# IDLE_AUTHGATE_ARGS (extra `serve` arguments, e.g. "--workers 2").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/bench/lib
AUTHGATE=${AUTHGATE_BIN:-$ROOT/target/release/authgate}
COUNT=${IDLE_COUNT:-10000}
SETTLE=${IDLE_SETTLE:-3}
CLOSE_SETTLE=${IDLE_CLOSE_SETTLE:-5}
TARGETS=${IDLE_TARGETS:-authgate nginx haproxy}
KINDS=${IDLE_KINDS:-http ws}
read -r -a AUTHGATE_ARGS <<<"${IDLE_AUTHGATE_ARGS:---workers 1}"

log() { printf '[idle %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PATH=$PATH:/usr/sbin:/sbin
for tool in nginx curl python3 openssl; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
if [ -z "${AUTHGATE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked --bin authgate >&2)
fi
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" -ge $((2 * COUNT + 1000)) ] || die "open files limit $NOFILE is too low for $COUNT connections through a proxy"

W=$(mktemp -d /tmp/authgate-idle.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

read -r P_UP P_WS P_AG P_NGX P_HAP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
wait_up() { # URL [HEADER]
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 ${2:+-H "$2"} "$1" && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}

mkdir -p "$W/tmp"
nginx_common="worker_processes 1;
daemon off;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((2 * COUNT + 1000)); }"
nginx_http="    access_log off;
    client_body_temp_path $W/tmp/body;
    proxy_temp_path $W/tmp/proxy;
    fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi;
    scgi_temp_path $W/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;"
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
nginx -p "$W" -c "$W/upstream.conf" &
PIDS+=("$!")
python3 "$LIB/ws_hold.py" --port "$P_WS" &
PIDS+=("$!")

openssl rand -hex 32 >"$W/jwt.secret"
SECRET=$(cat "$W/jwt.secret")
cat >"$W/authgate.toml" <<EOF
[server]
listen = "127.0.0.1:$P_AG"
shutdown_grace = 1

[store]
url = "sqlite://$W/authgate.db"

[jwt]
secret_file = "$W/jwt.secret"
ttl = 86400

[limits]
max_connections = $((2 * COUNT + 1000))
idle_timeout = 600

[[route]]
path_prefix = "/ws"
upstream = "http://127.0.0.1:$P_WS"
auth = "required"

[[route]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
auth = "required"
EOF
ag() { "$AUTHGATE" --config "$W/authgate.toml" "$@"; }
echo "idle-password-$$" | ag user add bench --password-stdin >/dev/null
TOKEN=$(ag token issue --user bench)
BEARER="Authorization: Bearer $TOKEN"

cat >"$W/nginx-proxy.conf" <<EOF
pid $W/nginx-proxy.pid;
error_log $W/nginx-proxy.err warn;
$nginx_common
http {
$nginx_http
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P_NGX backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /ws {
            proxy_pass http://127.0.0.1:$P_WS;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 600s;
        }
    }
}
EOF
HAP_MAXCONN=$(( (NOFILE - 200) / 2 ))
cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAP_MAXCONN

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout tunnel 600s
    timeout http-keep-alive 600s
    maxconn $HAP_MAXCONN

frontend jwt_hs256
    bind 127.0.0.1:$P_HAP
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify("HS256","$SECRET") -m int 1 }
    http-request del-header Authorization
    use_backend ws if { path_beg /ws }
    default_backend up

backend up
    server up 127.0.0.1:$P_UP

backend ws
    server ws 127.0.0.1:$P_WS
EOF

start_target() { # NAME -> sets TPID, TPORT, THDR
    case $1 in
        authgate)
            "$AUTHGATE" serve --config "$W/authgate.toml" "${AUTHGATE_ARGS[@]}" 2>"$W/authgate.log" &
            TPID=$!; TPORT=$P_AG; THDR=$BEARER ;;
        nginx)
            nginx -p "$W" -c "$W/nginx-proxy.conf" &
            TPID=$!; TPORT=$P_NGX; THDR="" ;;
        haproxy)
            haproxy -db -f "$W/haproxy.cfg" &
            TPID=$!; TPORT=$P_HAP; THDR=$BEARER ;;
    esac
    wait_up "http://127.0.0.1:$TPORT/bench" "$THDR"
}

printf '| target | kind | connections ok | RSS before MiB | RSS idle MiB | per connection KiB | RSS after close MiB |\n'
printf '| --- | --- | ---: | ---: | ---: | ---: | ---: |\n'
for target in $TARGETS; do
    if [ "$target" = haproxy ] && ! command -v haproxy >/dev/null; then
        log "haproxy not installed (apt-get install -y haproxy); skipped"
        continue
    fi
    for kind in $KINDS; do
        start_target "$target"
        main_pid=$TPID   # idle_conns.py sums it and its children (nginx's worker)
        path=/bench
        ws_args=()
        if [ "$kind" = ws ]; then path=/ws/bench; ws_args=(--websocket); fi
        args=(--port "$TPORT" --path "$path" --count "$COUNT" --pid "$TPID"
            --settle "$SETTLE" --close-settle "$CLOSE_SETTLE" "${ws_args[@]}")
        [ -n "$THDR" ] && args+=(--header "$THDR")
        out=$(python3 "$LIB/idle_conns.py" "${args[@]}")
        log "$target $kind: $out"
        python3 - "$target" "$kind" "$out" <<'EOF'
import json, sys
target, kind, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ok = r["ok"]
per = (r["rss_idle_kib"] - r["rss_before_kib"]) / ok if ok else float("nan")
print(f"| {target} | {kind} | {ok:,} / {r['connections']:,} | {r['rss_before_kib']/1024:.1f} | "
      f"{r['rss_idle_kib']/1024:.1f} | {per:.1f} | {r['rss_after_close_kib']/1024:.1f} |")
EOF
        kill -TERM "$main_pid" 2>/dev/null || true
        wait "$main_pid" 2>/dev/null || true
        sleep 0.5
    done
done
