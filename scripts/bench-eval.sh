#!/usr/bin/env bash
# EVALSHA through pkv on its embedded store and through pkv on a private redis-server (the
# script then runs inside Redis, wrapped) against that redis-server direct, side by side in
# one run:
# redis-benchmark sends EVALSHA of a one-call script (`incrby KEYS[1] ARGV[1]`, as a rate
# limiter's) and, for comparison, the same INCR without a script, at pipelines of 1 and 16.
# Prints requests per second and ratios (median of rounds, configurations alternating).
#
#   scripts/bench-eval.sh [requests] [rounds]
#
# Needs redis-server, redis-cli and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REQUESTS=${1:-100000}
ROUNDS=${2:-3}
CLIENTS=50
KEYS=100000
SCRIPT="return redis.call('incrby', KEYS[1], ARGV[1])"

source "$(dirname "$0")/bench-common.sh"

start_pkv() { # $1 = upstream URL or ""; sets PORT
  PORT=$(free_port)
  (cd "$WORK" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" PKV_LOG=error \
    ${1:+PKV_UPSTREAM_URL="$1"} \
    ${PKV_SCRIPT_BUDGET_MS:+PKV_SCRIPT_BUDGET_MS="$PKV_SCRIPT_BUDGET_MS"} "$PKV" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv ""; PKV_PORT=$PORT
start_pkv "redis://127.0.0.1:$REDIS_PORT"; PROXY_PORT=$PORT
# Development mode: the development issuer signs; a large quantity never runs out here.
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400)

auth() { # port -> client auth options
  [ "$1" = "$REDIS_PORT" ] || printf -- '-a %s --no-auth-warning' "$TOKEN"
}

# Each side loads the script (pkv keeps it in the token's account).
for port in "$PKV_PORT" "$PROXY_PORT" "$REDIS_PORT"; do
  # shellcheck disable=SC2046
  SHA=$(redis-cli -p "$port" $(auth "$port") SCRIPT LOAD "$SCRIPT")
done

rps() { # port pipeline command...
  local port=$1 p=$2
  shift 2
  # shellcheck disable=SC2046
  redis-benchmark -p "$port" $(auth "$port" | sed 's/ --no-auth-warning//') -P "$p" -n "$REQUESTS" -c "$CLIENTS" -r "$KEYS" --csv "$@" 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "redis-benchmark -n $REQUESTS -c $CLIENTS -r $KEYS, median of $ROUNDS rounds, configurations alternating"
echo "script: $SCRIPT ($SHA)"
echo "machine: $(nproc) cores, $(uname -sr); $(date -u +%Y-%m-%d)"
printf '| %-7s | %2s | %9s | %9s | %9s | %9s | %11s |\n' test P embedded pkv+redis redis embedded/redis pkv+redis/redis
printf '| %-7s | %2s | %9s | %9s | %9s | %9s | %11s |\n' --- -- --- --- --- --- ---
for test in ${TESTS:-evalsha incr}; do
  case $test in
    evalsha) cmd=(EVALSHA "$SHA" 1 key:__rand_int__ 1) ;;
    incr) cmd=(INCRBY key:__rand_int__ 1) ;;
  esac
  for p in 1 16; do
    k=(); u=(); r=()
    for _ in $(seq "$ROUNDS"); do
      k+=("$(rps "$PKV_PORT" "$p" "${cmd[@]}")")
      u+=("$(rps "$PROXY_PORT" "$p" "${cmd[@]}")")
      r+=("$(rps "$REDIS_PORT" "$p" "${cmd[@]}")")
    done
    mk=$(printf '%s\n' "${k[@]}" | median); mu=$(printf '%s\n' "${u[@]}" | median)
    mr=$(printf '%s\n' "${r[@]}" | median)
    printf '| %-7s | %2s | %9s | %9s | %9s | %9s | %11s |\n' "$test" "$p" "$mk" "$mu" "$mr" \
      "$(ratio "$mk" "$mr")" "$(ratio "$mu" "$mr")"
  done
done
