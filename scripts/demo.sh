#!/usr/bin/env bash
# The demo in one command, from a fresh clone:
#   build (release), create config/jwt.secret and the demo users if missing,
#   start the echo upstream on 127.0.0.1:9000 in the background,
#   print curl lines that work, then run the gateway on 127.0.0.1:8080 in the
#   foreground. Ctrl-C stops the gateway (after draining) and the upstream.
# Safe to run again: the secret, the store and the users are kept.
#
# AUTHGATE_DEMO_PROFILE=debug builds and runs the debug binaries instead
# (quicker after `cargo test` has built them; scripts/doc_examples.py in CI).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONFIG="config/authgate.toml"
SECRET_FILE="config/jwt.secret"
UPSTREAM_ADDR="127.0.0.1:9000"   # the routes' upstream in $CONFIG
GATEWAY_ADDR="127.0.0.1:8080"    # [server] listen in $CONFIG
GATEWAY="http://$GATEWAY_ADDR"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "${AUTHGATE_DEMO_PROFILE:-release}" in
  release) PROFILE_DIR=release BUILD_FLAGS=(--release) ;;
  debug) PROFILE_DIR=debug BUILD_FLAGS=() ;;
  *) printf 'demo: AUTHGATE_DEMO_PROFILE must be release or debug\n' >&2; exit 2 ;;
esac
AUTHGATE="$TARGET_DIR/$PROFILE_DIR/authgate"
ECHO_UPSTREAM="$TARGET_DIR/$PROFILE_DIR/echo_upstream"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on HOST:PORT.
port_open() {
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

user_exists() {
  local names
  names="$("$AUTHGATE" --config "$CONFIG" user list 2>/dev/null)" || return 1
  awk -F'\t' -v name="$1" 'NR > 1 && $1 == name { found = 1 } END { exit !found }' <<<"$names"
}

# ensure_user NAME PASSWORD [ROLE]...: create the user unless it exists.
ensure_user() {
  local name="$1" password="$2" role err
  shift 2
  local role_args=()
  for role in "$@"; do role_args+=(--role "$role"); done
  if user_exists "$name"; then
    say "user $name already exists"
    return 0
  fi
  if err="$(printf '%s\n' "$password" |
    "$AUTHGATE" --config "$CONFIG" user add "$name" --password-stdin "${role_args[@]}" 2>&1 >/dev/null)"; then
    say "created user $name${*:+ (roles: $*)}"
  elif grep -qi 'already exists' <<<"$err"; then
    say "user $name already exists"
  else
    printf '%s\n' "$err" >&2
    die "could not create user $name"
  fi
}

say "building authgate and the echo upstream ($PROFILE_DIR; the first build takes a few minutes)"
cargo build "${BUILD_FLAGS[@]}" --locked --bin authgate --bin echo_upstream

mkdir -p data
if [[ ! -s "$SECRET_FILE" ]]; then
  say "generating $SECRET_FILE (48 random bytes, base64)"
  (
    umask 077
    tmp="$(mktemp "$SECRET_FILE.XXXXXX")"
    if command -v openssl >/dev/null 2>&1; then
      openssl rand -base64 48 >"$tmp"
    else
      head -c 48 /dev/urandom | base64 -w0 >"$tmp"
      echo >>"$tmp"
    fi
    mv "$tmp" "$SECRET_FILE"
  )
fi

"$AUTHGATE" --config "$CONFIG" check-config ||
  die "$CONFIG is not valid (see above)"

ensure_user demo demo-password
ensure_user admin admin-password admin

port_open "$UPSTREAM_ADDR" && die "$UPSTREAM_ADDR is already in use (an earlier demo still running?)"
port_open "$GATEWAY_ADDR" && die "$GATEWAY_ADDR is already in use (an earlier demo still running?)"

ECHO_PID=""
cleanup() {
  if [[ -n "$ECHO_PID" ]]; then
    kill "$ECHO_PID" 2>/dev/null || true
    wait "$ECHO_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

say "starting the echo upstream on $UPSTREAM_ADDR"
"$ECHO_UPSTREAM" --listen "$UPSTREAM_ADDR" &
ECHO_PID=$!
for _ in $(seq 50); do
  kill -0 "$ECHO_PID" 2>/dev/null || die "the echo upstream did not start"
  port_open "$UPSTREAM_ADDR" && break
  sleep 0.1
done
port_open "$UPSTREAM_ADDR" || die "the echo upstream does not answer on $UPSTREAM_ADDR"

cat <<CURL

In another terminal, try:

  # log in as demo (no roles) and keep the JWT
  TOKEN=\$(curl -s -X POST $GATEWAY/auth/login -H 'Content-Type: application/json' \\
    -d '{"username":"demo","password":"demo-password"}' | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')

  # Bearer token: the upstream sees X-Auth-User: demo and no Authorization header
  curl -s $GATEWAY/hello -H "Authorization: Bearer \$TOKEN"

  # ?token=: the upstream sees the query "a=1&b=2", without the token
  curl -s "$GATEWAY/hello?a=1&token=\$TOKEN&b=2"

  # public route: no credential needed, no identity headers forwarded
  curl -s $GATEWAY/public/info

  # no credential on a protected route: 401
  curl -s -i $GATEWAY/hello

  # admin route as demo: 403 MISSING_ROLE
  curl -s -i $GATEWAY/admin/stats -H "Authorization: Bearer \$TOKEN"

  # admin route as admin: 200
  ADMIN_TOKEN=\$(curl -s -X POST $GATEWAY/auth/login -H 'Content-Type: application/json' \\
    -d '{"username":"admin","password":"admin-password"}' | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
  curl -s $GATEWAY/admin/stats -H "Authorization: Bearer \$ADMIN_TOKEN"

Gateway logs follow. Ctrl-C stops the gateway and the echo upstream.

CURL

"$AUTHGATE" serve --config "$CONFIG"
