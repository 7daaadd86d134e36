#!/usr/bin/env bash
# Builds every fuzz target under fuzz/fuzz_targets/ and runs each for a
# bounded time (FUZZ_SECONDS, default 45), so a target that stops compiling
# or a crash on the seeds or on what the fuzzer finds fails CI. Run by
# .ci/run; by hand: `bash scripts/fuzz.sh` (longer: FUZZ_SECONDS=600).
#
# Needs the nightly toolchain (installed when missing) and cargo-fuzz at the
# version pinned below (installed from crates.io when missing or different).
# Built with debug assertions and no sanitizer: the crate forbids unsafe
# code, so AddressSanitizer would mostly instrument dependencies, at twice
# the build and run time; panics and the targets' assertions are what is
# looked for. New inputs go to a temporary corpus and crashes to
# fuzz/artifacts/<target>/ (ignored by git), so the tree stays clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${FUZZ_SECONDS:-45}"
# release (default): optimised, for long runs; dev: unoptimised, built in
# about half the time, which is what CI wants from a bounded run.
FUZZ_BUILD="${FUZZ_BUILD:-release}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  bash scripts/cargo_install_quick.sh cargo-fuzz "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

# The fuzz workspace pins its own lock, seeded from the main one: a build
# that had to change it would fetch other versions and leave the tree dirty.
if ! (cd fuzz && cargo +nightly metadata --locked --format-version 1 >/dev/null 2>&1); then
  echo "fuzz/Cargo.lock is out of date with Cargo.toml (a dependency changed); refresh it with:" >&2
  echo "  cp Cargo.lock fuzz/Cargo.lock && (cd fuzz && cargo +nightly metadata --format-version 1 >/dev/null)" >&2
  exit 1
fi

flags=(--sanitizer none --debug-assertions --target-dir "$TARGET_DIR")
if [ "$FUZZ_BUILD" = dev ]; then flags+=(--dev); fi
targets="$(cargo +nightly fuzz list)"
echo "fuzz targets: $(echo $targets)"
started=$SECONDS
cargo +nightly fuzz build "${flags[@]}"
echo "built in $((SECONDS - started)) s"

corpus_root="$(mktemp -d)"
trap 'rm -rf "$corpus_root"' EXIT
for target in $targets; do
  corpus="$corpus_root/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  echo "== $target: ${SECONDS_PER_TARGET} s"
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" 2>"$corpus_root/$target.log"; then
    tail -n 60 "$corpus_root/$target.log"
    echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
    echo "replay: cargo +nightly fuzz run --sanitizer none $target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done ' "$corpus_root/$target.log" || true
done
