#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing, builds
# (release profile, shared with the benchmarks), runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)   # Pingora's zlib-ng build
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --release --locked --no-fail-fast
