#!/usr/bin/env bash
# The write cost of the embedded store's append-only log: redis-benchmark SET at pipelines
# of 1 and 16 against pkv on its embedded store in memory only (no PKV_DATA_FILE) and with
# PKV_DATA_FILE under each PKV_APPENDFSYNC policy, side by side in one run (the
# configurations alternate within each round). Prints requests per second and each
# policy's ratio to memory only.
#
#   scripts/bench-durability.sh [requests] [rounds]
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REQUESTS=${1:-100000}
ROUNDS=${2:-3}
CLIENTS=50
SIZE=64
KEYS=100000

source "$(dirname "$0")/bench-common.sh"

start_pkv() { # $1 = fsync policy, or "" for memory only; sets PORT
  PORT=$(free_port)
  local dir
  dir=$(mktemp -d -p "$WORK")
  (cd "$dir" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" PKV_LOG=warn \
     ${1:+PKV_DATA_FILE="$dir/pkv.data"} ${1:+PKV_APPENDFSYNC="$1"} "$PKV" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv ""; MEMORY_PORT=$PORT
start_pkv always; ALWAYS_PORT=$PORT
start_pkv everysec; EVERYSEC_PORT=$PORT
start_pkv no; NO_PORT=$PORT
# Development mode: the development issuer signs; a large quantity never runs out here.
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400)

rps() { # port pipeline
  redis-benchmark -p "$1" -a "$TOKEN" -t set -P "$2" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo "redis-benchmark SET -n $REQUESTS -c $CLIENTS -d $SIZE -r $KEYS, median of $ROUNDS rounds, configurations alternating"
printf '%3s %10s %10s %10s %10s %10s %10s %10s\n' P memory always everysec no always/m everysec/m no/m
for p in 1 16; do
  m=() a=() e=() n=()
  for _ in $(seq "$ROUNDS"); do
    m+=("$(rps "$MEMORY_PORT" "$p")")
    a+=("$(rps "$ALWAYS_PORT" "$p")")
    e+=("$(rps "$EVERYSEC_PORT" "$p")")
    n+=("$(rps "$NO_PORT" "$p")")
  done
  mm=$(printf '%s\n' "${m[@]}" | median)
  ma=$(printf '%s\n' "${a[@]}" | median)
  me=$(printf '%s\n' "${e[@]}" | median)
  mn=$(printf '%s\n' "${n[@]}" | median)
  printf '%3s %10s %10s %10s %10s %10s %10s %10s\n' "$p" "$mm" "$ma" "$me" "$mn" \
    "$(ratio "$ma" "$mm")" "$(ratio "$me" "$mm")" "$(ratio "$mn" "$mm")"
done
