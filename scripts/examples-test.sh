#!/usr/bin/env bash
# Runs the examples in examples/ (Python with redis-py, Node with ioredis) against a pkv on
# its embedded store, each with a token of its own, and fails if either fails. Installs
# what they need when it is missing: python3 with venv, node and npm (Debian's packages,
# as root), redis-py into a virtual environment under target/, ioredis with `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null \
  || need+=(python3 python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "The examples need: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

venv=target/examples/python
if ! "$venv/bin/python3" -c 'import redis' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
(cd examples/node && npm ci --silent --no-audit --no-fund)

# The binary as the test suite builds it (dev-dependencies' features included), so that
# after scripts/test.sh this compiles nothing.
cargo test --quiet --no-run --test healthcheck
pkv=target/debug/pkv
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A pkv as an operator would run it, trusting one issuer (a stand-in for a Prex exchange),
# on its embedded store, on a port of its own choosing.
keys=$("$pkv" keygen)
issuer_seed=$(sed -n 's/^seed: //p' <<<"$keys")
issuer_did=$(sed -n 's/^did: *//p' <<<"$keys")
secret_seed=$("$pkv" keygen | sed -n 's/^seed: //p')
(cd "$work" && exec env PKV_LISTEN=127.0.0.1:0 PKV_QUOTA_ISSUERS="$issuer_did" \
  PKV_SECRET_SEED="$secret_seed" PKV_LOG=warn "$OLDPWD/$pkv" >"$work/out" 2>"$work/err") &
pid=$!
addr=
for _ in $(seq 1 200); do
  addr=$(sed -n 's/^pkv listening on //p' "$work/out")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; echo "pkv exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { echo "pkv did not listen within 10 s" >&2; exit 1; }
url="redis://$addr"

mint() {
  "$pkv" token mint --issuer-seed "$issuer_seed" --quantity 10 --sub "$1"
}

python_token=$(mint example-python)
node_token=$(mint example-node)
echo "== examples/python against pkv at $addr"
PKV_URL="$url" PKV_TOKEN="$python_token" "$venv/bin/python3" examples/python/mailbox.py
echo "== examples/node against pkv at $addr"
PKV_URL="$url" PKV_TOKEN="$node_token" node examples/node/mailbox.js
