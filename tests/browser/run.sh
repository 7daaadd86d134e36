#!/usr/bin/env bash
# End-to-end tests in the system Chromium: the /_authgate/ admin page,
# external sign-in, and CORS from a page on a second origin.
#
# Installs what it needs when missing (Debian's chromium through apt, which
# needs root; playwright-core through `npm ci`, never a browser download),
# builds the gateway and runs tests/browser/admin-page.test.mjs.
#
# Screenshots go to tests/browser/artifacts/ (git-ignored), so a test run
# leaves the work tree clean. Refreshing the README's docs/admin-keys.png is
# a deliberate step: `tests/browser/run.sh --refresh-screenshot` (or
# AUTHGATE_SCREENSHOT=<path>), then review and commit the new image.
#
# Environment: CHROMIUM_BIN (default /usr/bin/chromium), AUTHGATE_BIN
# (default: the debug build below), AUTHGATE_SCREENSHOT (default
# tests/browser/artifacts/admin-keys.png).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

for arg in "$@"; do
  case "$arg" in
    --refresh-screenshot) export AUTHGATE_SCREENSHOT="$root/docs/admin-keys.png" ;;
    *)
      echo "run.sh: unknown option $arg (known: --refresh-screenshot)" >&2
      exit 2
      ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    echo "run.sh: need root to run: $*" >&2
    exit 1
  fi
}

apt_install() {
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "== installing chromium"
  apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing nodejs and npm"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "run.sh: playwright-core needs Node.js 20 or newer; found $(node --version)" >&2
  exit 1
fi
echo "== $("$chromium_bin" --version 2>/dev/null | tail -n 1), node $(node --version)"

echo "== npm ci (tests/browser)"
cd "$here"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

cd "$root"
if [ -z "${AUTHGATE_BIN:-}" ]; then
  echo "== cargo build --locked --bin authgate"
  cargo build --locked --bin authgate
fi

echo "== browser test"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
export AUTHGATE_BIN="${AUTHGATE_BIN:-$target_dir/debug/authgate}"
export CHROMIUM_BIN="$chromium_bin"
cd "$here"
exec node --test --test-concurrency=1 --test-reporter=spec admin-page.test.mjs oidc-sign-in.test.mjs cors.test.mjs
