#!/usr/bin/env bash
# Full TLS handshakes per second with one certificate against 50 chosen by
# SNI: Python's ssl client, one new connection at a time, full TLS 1.3
# handshakes (no resumption). The two gateways run side by side and are
# measured in turn, BENCH_ROUNDS times, so a noisy machine shows as a
# spread, not a bias.
#
#   bash bench/sni_handshakes.sh                 # release build (built if missing)
#   AUTHGATE_BIN=target/debug/authgate bash bench/sni_handshakes.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${BENCH_ROUNDS:-3}"
export SECONDS_PER_RUN="${BENCH_DURATION:-5}"
CERTS=50
BIN="${AUTHGATE_BIN:-target/release/authgate}"
if [ ! -x "$BIN" ]; then
  cargo build --release --locked --bin authgate
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem \
  -out ca.pem -days 2 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
leaf() { # NAME SAN...
  local name="$1"
  shift
  local san
  san="$(printf 'DNS:%s,' "$@")"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name-key.pem" \
    -out "$name.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\n' "${san%,}" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile "$name.ext" -out "$name.pem" 2>/dev/null
}
leaf default default.test
for i in $(seq 1 "$CERTS"); do leaf "site$i" "site$i.test" "*.site$i.test"; done
head -c 48 /dev/urandom | base64 >jwt.secret

config() { # FILE PORT WITH_LIST
  {
    printf '[server]\nlisten = "127.0.0.1:0"\n[jwt]\nsecret_file = "jwt.secret"\n'
    printf '[store]\nurl = "sqlite://%s/%s.db"\n' "$work" "$1"
    printf '[server.tls]\nlisten = "127.0.0.1:%s"\ncert = "default.pem"\nkey = "default-key.pem"\n' "$2"
    if [ "$3" = yes ]; then
      for i in $(seq 1 "$CERTS"); do
        printf '[[server.tls.certificates]]\ncert = "site%s.pem"\nkey = "site%s-key.pem"\n' "$i" "$i"
      done
    fi
  } >"$1.toml"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
one_port="$(free_port)"
many_port="$(free_port)"
config one "$one_port" no
config many "$many_port" yes
AUTHGATE_LOG=warn "$OLDPWD/$BIN" serve --workers 1 --config one.toml >one.log 2>&1 &
pids+=($!)
AUTHGATE_LOG=warn "$OLDPWD/$BIN" serve --workers 1 --config many.toml >many.log 2>&1 &
pids+=($!)
for port in "$one_port" "$many_port"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

rate() { # PORT NAME: full handshakes per second, one at a time, TLS 1.3
  python3 - "$1" "$2" <<'PY'
import socket, ssl, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile="ca.pem")
context.minimum_version = ssl.TLSVersion.TLSv1_3
deadline = time.monotonic() + float(__import__("os").environ.get("SECONDS_PER_RUN", "5"))
count = 0
start = time.monotonic()
while time.monotonic() < deadline:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname=name):
            count += 1
print(count / (time.monotonic() - start))
PY
}
printf '| round | 1 certificate (default.test) | %s certificates (site25.test) | ratio |\n| --- | ---: | ---: | ---: |\n' "$CERTS"
for round in $(seq 1 "$ROUNDS"); do
  one="$(rate "$one_port" default.test)"
  many="$(rate "$many_port" site25.test)"
  printf '| %s | %.0f/s | %.0f/s | %.3f |\n' "$round" "$one" "$many" "$(echo "$many / $one" | bc -l)"
done
