#!/usr/bin/env bash
# Installs the real upstream servers the integration tests put behind the
# gateway (the differential path test, the upgrade and header-alias tests).
# Idempotent and quick when everything is there already. Everything goes
# under $AUTHGATE_TEST_UPSTREAMS (default: target/test-upstreams, ignored
# by git); system packages are installed with apt-get when missing (root).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="${AUTHGATE_TEST_UPSTREAMS:-$repo/target/test-upstreams}"
mkdir -p "$dest"

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: need root to install ${missing[*]}" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Python servers (one venv; pinned versions) -----------------------------
python_packages=(
  "flask==3.1.3"
)
venv="$dest/venv"
stamp="$venv/.installed"
wanted="${python_packages[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${python_packages[@]}"
  printf '%s' "$wanted" >"$stamp"
fi

# --- Node servers -----------------------------------------------------------
node_packages=(
  "express@5.2.1"
)
node_dir="$dest/node"
stamp="$node_dir/.installed"
wanted="${node_packages[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --silent --no-audit --no-fund --no-save "${node_packages[@]}" >/dev/null)
  printf '%s' "$wanted" >"$stamp"
fi

# --- Embedded Tomcat (Debian's jars), compiled once -------------------------
apt_install libtomcat10-embed-java libjakarta-annotation-api-java
tomcat_dir="$dest/tomcat"
if [ ! -f "$tomcat_dir/TomcatApp.class" ] || [ "$here/TomcatApp.java" -nt "$tomcat_dir/TomcatApp.class" ]; then
  mkdir -p "$tomcat_dir"
  javac -d "$tomcat_dir" -cp /usr/share/java/tomcat10-embed-core.jar "$here/TomcatApp.java"
fi

echo "test upstreams ready in $dest"
