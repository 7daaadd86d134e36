#!/usr/bin/env bash
# Installs the real upstream servers that integration tests drive through the
# gateway. Idempotent and quick when everything is installed already: each
# section checks its own marker first. Everything lands under
# $AUTHGATE_UPSTREAMS (default target/upstreams/, git-ignored with target/),
# which the tests find the same way (tests/common/mod.rs `upstreams_dir`).
#
#   bash tests/upstreams/setup.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

UPSTREAMS="${AUTHGATE_UPSTREAMS:-$PWD/target/upstreams}"
mkdir -p "$UPSTREAMS"

# One Python virtual environment shared by every Python upstream.
VENV="$UPSTREAMS/venv"
python_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
}

# pip_pinned MARKER PACKAGE==VERSION...: installs the pinned packages once.
pip_pinned() {
  local marker="$UPSTREAMS/.$1"
  shift
  local want="$*"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
    return
  fi
  python_venv
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  printf '%s' "$want" >"$marker"
}

# ---------------------------------------------------------------------------
# Upgrades and identity header aliases (tests/upgrades_and_aliases.rs)
# - hypercorn: an ASGI server that answers `Upgrade: h2c` with 101 and then
#   speaks HTTP/2 on the socket (the tunnel the gateway must never open).
# - gunicorn: a WSGI server; with `--header-map dangerous` it folds `_` into
#   `-` as CGI, PHP-FPM and older WSGI servers do (X_Auth_User ->
#   HTTP_X_AUTH_USER).
# ---------------------------------------------------------------------------
pip_pinned upgrades-aliases hypercorn==0.18.0 gunicorn==27.0.1
