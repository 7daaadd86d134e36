#!/usr/bin/env bash
# The one test command: every test of the workspace (unit, integration, doc).
# Extra arguments go to cargo test, e.g. `bash scripts/test.sh login`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --locked --workspace "$@"
# The admin page's end-to-end test in real Chromium (installs chromium and
# playwright-core when missing); skipped when arguments select tests.
# `cargo test` has just built target/debug/authgate; reuse it.
if [ "$#" -eq 0 ]; then
  AUTHGATE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/authgate" bash tests/browser/run.sh
fi
