#!/usr/bin/env bash
# The one test command: every test of the workspace (unit, integration, doc).
# Extra arguments go to cargo test, e.g. `bash scripts/test.sh login`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Real upstream servers some integration tests run (pinned, into
# target/upstreams/; quick when already installed).
bash tests/upstreams/setup.sh
cargo test --locked --workspace "$@"
# The admin page's end-to-end test in real Chromium (installs chromium and
# playwright-core when missing); skipped when arguments select tests.
# `cargo test` has just built target/debug/authgate; reuse it.
if [ "$#" -eq 0 ]; then
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  AUTHGATE_BIN="$target_dir/debug/authgate" bash tests/browser/run.sh
fi
