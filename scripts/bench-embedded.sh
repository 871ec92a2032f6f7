#!/usr/bin/env bash
# pkv on its embedded store against pkv on redis-server against redis-server direct, side by
# side in one run: redis-benchmark GET and SET at pipelines of 1 and 16, then a read-heavy
# mix (90% GET, 10% SET) from 50 clients. Prints requests per second and ratios.
#
#   scripts/bench-embedded.sh [requests] [rounds]
#
# PKV_THREADS=n in the environment is passed on to every pkv (0, the default, is one worker
# thread per core). PKV_BEFORE=<another pkv binary> adds a column: that binary on its own
# embedded store, run in the same rounds (an earlier build, to compare a change).
#
# The mix runs two redis-benchmark processes at once on the same keys, 45 clients sending
# GET and 5 sending SET, with request counts in the ratio 9:1; its figure is all requests
# over the wall time until both finish.
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REQUESTS=${1:-200000}
ROUNDS=${2:-3}
CLIENTS=50
SIZE=64
KEYS=100000

source "$(dirname "$0")/bench-common.sh"

start_pkv() { # $1 = upstream URL or ""; $2 = binary (default $PKV); sets PORT
  PORT=$(free_port)
  local dir
  dir=$(mktemp -d -p "$WORK")
  (cd "$dir" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" ${1:+PKV_UPSTREAM_URL="$1"} \
     PKV_THREADS="${PKV_THREADS:-0}" PKV_LOG=warn "${2:-$PKV}" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv ""; EMBEDDED_PORT=$PORT
BEFORE_PORT=
if [ -n "${PKV_BEFORE:-}" ]; then start_pkv "" "$PKV_BEFORE"; BEFORE_PORT=$PORT; fi
start_pkv "redis://127.0.0.1:$REDIS_PORT"; PROXY_PORT=$PORT
# Development mode: the development issuer signs; a large quantity never runs out here.
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400)

auth() { # port -> redis-benchmark auth options
  [ "$1" = "$REDIS_PORT" ] || printf -- '-a %s' "$TOKEN"
}

rps() { # port test pipeline
  # shellcheck disable=SC2046
  redis-benchmark -p "$1" $(auth "$1") -t "$2" -P "$3" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}

mix() { # port -> requests per second of the 90/10 mix
  local gets=$((REQUESTS * 9 / 10)) sets=$((REQUESTS / 10)) start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  redis-benchmark -p "$1" $(auth "$1") -t get -n "$gets" -c 45 -d "$SIZE" -r "$KEYS" -q >/dev/null 2>&1 &
  local g=$!
  # shellcheck disable=SC2046
  redis-benchmark -p "$1" $(auth "$1") -t set -n "$sets" -c 5 -d "$SIZE" -r "$KEYS" -q >/dev/null 2>&1 &
  local s=$!
  wait "$g" "$s"
  end=$(date +%s.%N)
  awk -v n="$REQUESTS" -v a="$start" -v b="$end" 'BEGIN { print int(n / (b - a)) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# Fill every key first, so that GETs find values on all three.
for port in "$EMBEDDED_PORT" $BEFORE_PORT "$PROXY_PORT" "$REDIS_PORT"; do
  # shellcheck disable=SC2046
  redis-benchmark -p "$port" $(auth "$port") -t set -n "$KEYS" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" -P 16 -q >/dev/null 2>&1
done

echo "redis-benchmark -n $REQUESTS -c $CLIENTS -d $SIZE -r $KEYS, median of $ROUNDS rounds, configurations alternating;" \
  "pkv threads ${PKV_THREADS:-0} (0 = one per core)${PKV_BEFORE:+; before = $PKV_BEFORE}"
printf '%-9s %3s %10s %10s %10s %15s %15s' test P embedded pkv+redis redis embedded/redis embedded/pkv+r
[ -n "$BEFORE_PORT" ] && printf ' %10s %15s' before embedded/before
echo
row() { # name pipeline measure...
  local name=$1 p=$2
  shift 2
  local e=() r=() d=() b=()
  for _ in $(seq "$ROUNDS"); do
    e+=("$("$@" "$EMBEDDED_PORT")")
    [ -n "$BEFORE_PORT" ] && b+=("$("$@" "$BEFORE_PORT")")
    r+=("$("$@" "$PROXY_PORT")")
    d+=("$("$@" "$REDIS_PORT")")
  done
  local me mr md mb
  me=$(printf '%s\n' "${e[@]}" | median)
  mr=$(printf '%s\n' "${r[@]}" | median)
  md=$(printf '%s\n' "${d[@]}" | median)
  printf '%-9s %3s %10s %10s %10s %15s %15s' "$name" "$p" "$me" "$mr" "$md" "$(ratio "$me" "$md")" "$(ratio "$me" "$mr")"
  if [ -n "$BEFORE_PORT" ]; then
    mb=$(printf '%s\n' "${b[@]}" | median)
    printf ' %10s %15s' "$mb" "$(ratio "$me" "$mb")"
  fi
  echo
}
plain() { rps "$4" "$1" "$2"; }
for test in get set; do
  for p in 1 16; do
    row "$test" "$p" plain "$test" "$p" x
  done
done
row "90/10 mix" 1 mix
