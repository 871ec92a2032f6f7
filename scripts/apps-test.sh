#!/usr/bin/env bash
# Runs the frameworks in tests/apps/ (Celery, RQ, Flask-Limiter, BullMQ, ioredis and
# node-redis scripts, redis-py's Lock) against a pkv, each app with a token of its own and under a timeout,
# then checks that every key the app left is in its account's namespace with a TTL
# (tests/apps/check_keys.py). Fails if any app or check fails.
#
#   scripts/apps-test.sh [--upstream] [APP...]
#
# By default pkv runs on its embedded store; `--upstream` (or PKV_APPS_BACKEND=upstream)
# puts a private redis-server behind it and also checks the keys there on a raw connection.
# APP is any of: celery rq flask-limiter bullmq node-scripts redis-py-lock (default: all). Installs what
# it needs when it is missing, as scripts/examples-test.sh does: the pinned Python packages
# (tests/apps/requirements.txt) into a virtual environment under target/apps/, the Node ones
# (tests/apps/package-lock.json) with `npm ci` under target/apps/.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${PKV_APPS_BACKEND:-embedded}
apps=()
for arg in "$@"; do
  case "$arg" in
    --upstream) backend=upstream ;;
    --embedded) backend=embedded ;;
    celery | rq | flask-limiter | bullmq | node-scripts | redis-py-lock) apps+=("$arg") ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[ "${#apps[@]}" -gt 0 ] || apps=(celery rq flask-limiter bullmq node-scripts redis-py-lock)

need=()
command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null \
  || need+=(python3 python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ "$backend" = upstream ] && ! command -v redis-server >/dev/null 2>&1 && need+=(redis-server)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "The apps need: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

venv=target/apps/python
if ! "$venv/bin/python3" -c 'import redis' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/apps/requirements.txt
# `npm ci` starts from an empty node_modules each time: run it only when the lock changed.
node_dir=target/apps/node
if ! cmp -s tests/apps/package-lock.json "$node_dir/package-lock.json" \
  || [ ! -d "$node_dir/node_modules" ]; then
  mkdir -p "$node_dir"
  cp tests/apps/package.json tests/apps/package-lock.json "$node_dir/"
  (cd "$node_dir" && npm ci --silent --no-audit --no-fund)
fi
export NODE_PATH=$PWD/$node_dir/node_modules
# The apps are imported from tests/apps/: leave no __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

# The binary as the test suite builds it, so that after scripts/test.sh this compiles nothing.
cargo test --quiet --no-run --test healthcheck
pkv=$PWD/target/debug/pkv
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

upstream_env=()
direct=()
if [ "$backend" = upstream ]; then
  port=$("$venv/bin/python3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  upstream_env=(PKV_UPSTREAM_URL="redis://127.0.0.1:$port")
  direct=(--direct "redis://127.0.0.1:$port" --accounts "$work/accounts")
fi

# A pkv as an operator would run it, trusting one issuer (a stand-in for a Prex exchange).
keys=$("$pkv" keygen)
issuer_seed=$(sed -n 's/^seed: //p' <<<"$keys")
issuer_did=$(sed -n 's/^did: *//p' <<<"$keys")
secret_seed=$("$pkv" keygen | sed -n 's/^seed: //p')
(cd "$work" && exec env PKV_LISTEN=127.0.0.1:0 PKV_QUOTA_ISSUERS="$issuer_did" \
  PKV_SECRET_SEED="$secret_seed" PKV_LOG=warn "${upstream_env[@]}" "$pkv" \
  >"$work/out" 2>"$work/err") &
pids+=($!)
addr=
for _ in $(seq 1 200); do
  addr=$(sed -n 's/^pkv listening on //p' "$work/out")
  [ -n "$addr" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/err" >&2; echo "pkv exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { echo "pkv did not listen within 10 s" >&2; exit 1; }

py=$PWD/$venv/bin/python3
failed=()
for app in "${apps[@]}"; do
  # The account is the token's sub; check_keys.py allows the namespaces listed so far,
  # including those of apps that failed before their check.
  token=$("$pkv" token mint --issuer-seed "$issuer_seed" --quantity 1000 --sub "apps-$app")
  echo "apps-$app" >>"$work/accounts"
  url="redis://:$token@$addr/0"
  case "$app" in
    celery) cmd=("$py" tests/apps/celery_test.py) ;;
    rq) cmd=("$py" tests/apps/rq_test.py) ;;
    flask-limiter) cmd=("$py" tests/apps/flask_limiter_test.py) ;;
    bullmq) cmd=(node tests/apps/bullmq_test.js) ;;
    node-scripts) cmd=(node tests/apps/node_scripts_test.js) ;;
    # Four threads contend for one lock, 25 rounds each (as tests/scripting.rs runs it).
    redis-py-lock) cmd=("$py" tests/apps/redis_py_lock.py "$url" 4 25) ;;
  esac
  echo "== $app through pkv ($backend) at $addr"
  start=$SECONDS
  if PKV_APP_URL="$url" timeout -k 5 90 "${cmd[@]}" \
    && timeout -k 5 30 "$py" tests/apps/check_keys.py "$url" "${direct[@]}"; then
    echo "== $app passed in $((SECONDS - start)) s"
  else
    echo "== $app FAILED after $((SECONDS - start)) s"
    failed+=("$app")
  fi
done
if [ -s "$work/err" ]; then
  echo "--- pkv's warnings"
  tail -n 20 "$work/err"
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "apps failed through pkv ($backend): ${failed[*]}" >&2
  exit 1
fi
echo "all apps passed through pkv ($backend): ${apps[*]}"
