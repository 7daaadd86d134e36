#!/usr/bin/env bash
# cargo install CRATE at VERSION (--locked), unoptimised and without debug
# info: CI's tools (cargo-deny, cargo-fuzz) run for seconds, so an optimised
# build of them would cost minutes of CI for nothing.
set -euo pipefail
crate=$1
version=$2
CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
  CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
  CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false \
  cargo install "$crate" --version "$version" --locked
