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

# ---------------------------------------------------------------------------
# Route confusion, differentially (tests/differential_paths.rs): the same
# tricky paths straight to each server and through the gateway.
# - Flask (Werkzeug): case-sensitive, reads `;` as part of a segment.
# - Express: matches routes ignoring case.
# - Tomcat (Debian's embedded jars): drops `;parameters` before mapping.
# ---------------------------------------------------------------------------
pip_pinned differential-python flask==3.1.3

# PyJWT verifies X-Auth-Assertion in docs/assertions/verify_assertion.py
# (tests/assertion.rs).
pip_pinned assertion-python "pyjwt[crypto]==2.10.1"

# The OTLP/HTTP receiver of tests/telemetry.rs and bench/run.sh
# (tests/upstreams/otlp_receiver.py) decodes spans with the official
# OpenTelemetry protobuf definitions.
pip_pinned otlp-python opentelemetry-proto==1.45.2 protobuf==7.36.2

# Node packages:
# - method-override: Express middleware reading the method from
#   X-HTTP-Method-Override & co. and `?_method=` (tests/header_hygiene.rs);
# - ws: the WebSocket server behind tests/websocket_revocation.rs.
# - jose: verifies X-Auth-Assertion in docs/assertions/verify-assertion.mjs
#   (tests/assertion.rs).
node_packages="express@5.2.1 method-override@3.0.0 ws@8.23.1 jose@6.2.19"
NODE_DIR="$UPSTREAMS/node"
if [ ! -f "$NODE_DIR/.installed" ] || [ "$(cat "$NODE_DIR/.installed")" != "$node_packages" ]; then
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund --no-save $node_packages >/dev/null)
  printf '%s' "$node_packages" >"$NODE_DIR/.installed"
fi

# ---------------------------------------------------------------------------
# OIDC sign-in (tests/oidc.rs, tests/browser/): panva's certified
# oidc-provider, pinned by tests/oidc/package-lock.json. The tests copy
# tests/oidc/provider.mjs next to its node_modules and run it.
# ---------------------------------------------------------------------------
OIDC_DIR="$UPSTREAMS/oidc"
oidc_want="$(sha256sum tests/oidc/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$OIDC_DIR/.installed" ] || [ "$(cat "$OIDC_DIR/.installed")" != "$oidc_want" ]; then
  mkdir -p "$OIDC_DIR"
  cp tests/oidc/package.json tests/oidc/package-lock.json "$OIDC_DIR/"
  (cd "$OIDC_DIR" && npm ci --silent --no-audit --no-fund >/dev/null)
  printf '%s' "$oidc_want" >"$OIDC_DIR/.installed"
fi

apt_missing=()
for package in libtomcat10-embed-java libjakarta-annotation-api-java; do
  dpkg -s "$package" >/dev/null 2>&1 || apt_missing+=("$package")
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: installing ${apt_missing[*]} needs root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
TOMCAT_DIR="$UPSTREAMS/tomcat"
if [ ! -f "$TOMCAT_DIR/TomcatApp.class" ] || [ tests/upstreams/TomcatApp.java -nt "$TOMCAT_DIR/TomcatApp.class" ]; then
  mkdir -p "$TOMCAT_DIR"
  javac -nowarn -d "$TOMCAT_DIR" -cp /usr/share/java/tomcat10-embed-core.jar tests/upstreams/TomcatApp.java
fi

echo "test upstreams ready in $UPSTREAMS"
