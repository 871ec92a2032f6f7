#!/usr/bin/env bash
# Measures this tree's pkv against another revision's, side by side in one run against one
# private redis-server: redis-benchmark GET, SET, INCR, LPUSH and APPEND at pipelines of 1
# and 16, metering on, configurations alternating, median of rounds. Prints requests per
# second and the new/old ratio.
#
#   scripts/bench-versus.sh REVISION [requests] [rounds]
#   OLD_PKV=/path/to/pkv scripts/bench-versus.sh - [requests] [rounds]
#
# REVISION is built (release) in a temporary worktree unless OLD_PKV names a binary.
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REV=${1:?usage: scripts/bench-versus.sh REVISION [requests] [rounds]}
REQUESTS=${2:-100000}
ROUNDS=${3:-3}
CLIENTS=50
SIZE=64

source "$(dirname "$0")/bench-common.sh"

if [ -z "${OLD_PKV:-}" ]; then
  git -C "$ROOT" worktree add -q --detach "$WORK/old" "$REV"
  (cd "$WORK/old" && CARGO_TARGET_DIR="$ROOT/target/versus" cargo build --release -q)
  git -C "$ROOT" worktree remove --force "$WORK/old"
  OLD_PKV=$ROOT/target/versus/release/pkv
fi

start_pkv() { # $1 = binary; sets PORT
  PORT=$(free_port)
  (cd "$WORK" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" PKV_UPSTREAM_URL="redis://127.0.0.1:$REDIS_PORT" \
     PKV_LOG=warn "$1" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv "$PKV"; NEW_PORT=$PORT
start_pkv "$OLD_PKV"; OLD_PORT=$PORT
# Development mode: both derive the same development issuer; a large quantity never runs out.
# One token each: the two revisions may keep ledger records in different forms.
mint() { (cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400); }
declare -A TOKEN=(["$NEW_PORT"]=$(mint) ["$OLD_PORT"]=$(mint))

rps() { # port pipeline command...
  local port=$1 p=$2
  shift 2
  redis-benchmark -p "$port" -a "${TOKEN[$port]}" -P "$p" -n "$REQUESTS" -c "$CLIENTS" -r 100000 --csv "$@" 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

VALUE=$(head -c "$SIZE" /dev/zero | tr '\0' x)
declare -A TESTS=(
  [get]="GET key:__rand_int__"
  [set]="SET key:__rand_int__ $VALUE"
  [incr]="INCR counter:__rand_int__"
  [lpush]="LPUSH list:__rand_int__ $VALUE"
  [append]="APPEND str:__rand_int__ xy"
)
echo "redis-benchmark -n $REQUESTS -c $CLIENTS -r 100000, median of $ROUNDS rounds, configurations alternating"
echo "new: $PKV  old: $OLD_PKV ($REV)"
printf '%-7s %3s %10s %10s %9s\n' test P new old new/old
for test in get set incr lpush append; do
  for p in 1 16; do
    new=(); old=()
    for _ in $(seq "$ROUNDS"); do
      # shellcheck disable=SC2086
      new+=("$(rps "$NEW_PORT" "$p" ${TESTS[$test]})")
      # shellcheck disable=SC2086
      old+=("$(rps "$OLD_PORT" "$p" ${TESTS[$test]})")
    done
    m_new=$(printf '%s\n' "${new[@]}" | median)
    m_old=$(printf '%s\n' "${old[@]}" | median)
    printf '%-7s %3s %10s %10s %9s\n' "$test" "$p" "$m_new" "$m_old" "$(ratio "$m_new" "$m_old")"
  done
done
