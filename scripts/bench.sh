#!/usr/bin/env bash
# pkv against direct Redis and twemproxy, side by side, on one machine in one run.
#
#   scripts/bench.sh [requests] [rounds]
#
# Starts a private redis-server, twemproxy (Debian's nutcracker) in front of it, and pkv in
# front of it with authentication, metering and namespacing on (a trusted issuer, a real
# quota token). Runs redis-benchmark (50 clients, 64-byte values, random keys) for SET, GET,
# INCR, LPUSH, LRANGE_100 and MSET at pipelines of 1 and 16 against each, configurations
# alternating, and prints requests per second, p50/p99 latency and the ratios. Then measures
# pkv's memory per idle authenticated connection and an AUTH storm (scripts/conn_bench.py).
#
# PKV_METERING=off or PKV_THREADS=n in the environment are passed on to pkv.
#
# Needs: redis-server, redis-benchmark (redis-server, redis-tools), nutcracker, python3.
set -euo pipefail

REQUESTS=${1:-100000}
ROUNDS=${2:-3}
CLIENTS=50
SIZE=64
TESTS="set get incr lpush lrange_100 mset"

for tool in redis-server redis-benchmark nutcracker python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install redis-server redis-tools nutcracker)" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

source "$(dirname "$0")/bench-common.sh"

TWEM_PORT=$(free_port)
twemproxy_config
nutcracker -c "$WORK/nutcracker.yml" -o "$WORK/nutcracker.log" &
track $!
wait_port "$TWEM_PORT"

new_issuer
PKV_PORT=$(free_port)
(cd "$WORK" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PKV_PORT" PKV_UPSTREAM_URL="redis://127.0.0.1:$REDIS_PORT" \
  PKV_QUOTA_ISSUERS="$DID" PKV_SECRET_SEED="$SECRET" PKV_MAX_CONNECTIONS=20000 PKV_LOG=warn \
  PKV_METERING="${PKV_METERING:-on}" PKV_THREADS="${PKV_THREADS:-0}" "$PKV" >/dev/null 2>&1) &
PKV_PID=$!
track "$PKV_PID"
wait_port "$PKV_PORT"
mint_token

# One redis-benchmark run: prints "rps p50 p99".
run() { # port test pipeline [auth]
  local auth=()
  [ -n "${4:-}" ] && auth=(-a "$4")
  redis-benchmark -p "$1" "${auth[@]}" -t "$2" -P "$3" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" -r 100000 --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $0); split($0, f, ","); printf "%d %s %s\n", f[2], f[5], f[7] }'
}
median() { sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "pkv bench: redis-benchmark -n $REQUESTS -c $CLIENTS -d $SIZE -r 100000, median of $ROUNDS rounds (by rps), configurations alternating"
echo "pkv: metering ${PKV_METERING:-on}, threads ${PKV_THREADS:-0} (0 = one per core)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d)"
echo
printf '| %-10s | %2s | %22s | %22s | %22s | %9s | %11s |\n' test P "redis rps (p50/p99 ms)" "twemproxy" "pkv" "pkv/redis" "pkv/twemprx"
printf '| %-10s | %2s | %22s | %22s | %22s | %9s | %11s |\n' --- -- --- --- --- --- ---
for test in $TESTS; do
  for p in 1 16; do
    r=(); t=(); k=()
    for _ in $(seq "$ROUNDS"); do
      r+=("$(run "$REDIS_PORT" "$test" "$p")")
      t+=("$(run "$TWEM_PORT" "$test" "$p")")
      k+=("$(run "$PKV_PORT" "$test" "$p" "$TOKEN")")
    done
    mr=$(printf '%s\n' "${r[@]}" | median); mt=$(printf '%s\n' "${t[@]}" | median); mk=$(printf '%s\n' "${k[@]}" | median)
    show() { set -- $1; printf '%d (%s/%s)' "$1" "$2" "$3"; }
    printf '| %-10s | %2s | %22s | %22s | %22s | %9s | %11s |\n' "$test" "$p" "$(show "$mr")" "$(show "$mt")" "$(show "$mk")" \
      "$(ratio "${mk%% *}" "${mr%% *}")" "$(ratio "${mk%% *}" "${mt%% *}")"
  done
done
echo
python3 "$ROOT/scripts/conn_bench.py" --port "$PKV_PORT" --pid "$PKV_PID" --token "$TOKEN"
