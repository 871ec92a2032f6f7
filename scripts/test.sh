#!/usr/bin/env bash
# Runs pkv's whole test suite. The tests start their own redis-server processes (and
# tests/cluster.rs a six-node Redis Cluster with redis-cli --cluster create), so this
# installs Debian's redis-server and redis-tools first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  else
    echo "The tests need redis-server and redis-cli: sudo apt-get install -y redis-server redis-tools" >&2
    exit 1
  fi
fi

# tests/tls.rs runs redis-py (ssl=True) as an application would.
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-redis >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-redis >/dev/null; }
  else
    echo "The tests need redis-py: sudo apt-get install -y python3-redis (or pip install redis)" >&2
    exit 1
  fi
fi

cargo test --all-targets "$@"
