#!/usr/bin/env bash
# The one test command: every test of the workspace (unit, integration, doc).
# Extra arguments go to cargo test, e.g. `bash scripts/test.sh login`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo test --locked --workspace "$@"
