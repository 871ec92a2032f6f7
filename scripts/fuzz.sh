#!/usr/bin/env bash
# Smoke run of every fuzz target in fuzz/ (see fuzz/README.md): builds them with cargo-fuzz
# on the nightly toolchain, runs each for N seconds (default 20) from its seed corpus, and
# exits non-zero if any target crashes, panics or breaks a memory limit. New corpus entries go
# to a scratch directory, so the checked-in seeds stay as they are.
#
#   scripts/fuzz.sh [seconds-per-target]
set -euo pipefail

secs="${1:-20}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing ('cargo +nightly' does not run)." >&2
  echo "fuzz.sh: install it with 'rustup toolchain install nightly' and run again." >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
cargo +nightly fuzz build
targets=$(cargo +nightly fuzz list)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $targets; do
  echo "== fuzz target $target: ${secs}s"
  mkdir -p "$scratch/$target"
  # Memory bounds: a decoder that believes a declared length trips malloc_limit_mb.
  if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -print_final_stats=1; then
      failed+=("$target")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with" >&2
  echo "fuzz.sh: 'cd fuzz && cargo +nightly fuzz run <target> <artifact>')" >&2
  exit 1
fi
echo "fuzz.sh: every target ran ${secs}s without a failure: ${targets//$'\n'/ }"
