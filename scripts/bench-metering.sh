#!/usr/bin/env bash
# Measures what metering costs: redis-benchmark GET and SET, pipelines of 1 and 16, through
# pkv with metering on and with PKV_METERING=off, side by side in one run against one private
# redis-server. Prints requests per second and the on/off ratio.
#
#   scripts/bench-metering.sh [requests] [rounds]
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REQUESTS=${1:-200000}
ROUNDS=${2:-3}
CLIENTS=50
SIZE=64

source "$(dirname "$0")/bench-common.sh"

start_pkv() { # $1 = on|off; sets PORT
  PORT=$(free_port)
  (cd "$WORK" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" PKV_UPSTREAM_URL="redis://127.0.0.1:$REDIS_PORT" \
     PKV_METERING="$1" PKV_LOG=warn "$PKV" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv on; ON_PORT=$PORT
start_pkv off; OFF_PORT=$PORT
# Development mode: the development issuer signs; a large quantity never runs out here.
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400)

rps() { # port test pipeline
  redis-benchmark -p "$1" -a "$TOKEN" -t "$2" -P "$3" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" -r 100000 --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Metering gives every key the default TTL, so with metering on Redis keeps an expiry per
# key. This runs the same SET ... EX through metering off, to tell the upstream's share of
# the difference from pkv's.
VALUE=$(head -c "$SIZE" /dev/zero | tr '\0' x)
rps_set_ex() { # port pipeline
  redis-benchmark -p "$1" -a "$TOKEN" -P "$2" -n "$REQUESTS" -c "$CLIENTS" -r 100000 --csv SET key:__rand_int__ "$VALUE" EX 86400 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub(/"/, "", $2); print int($2) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo "redis-benchmark -n $REQUESTS -c $CLIENTS -d $SIZE -r 100000, median of $ROUNDS rounds, configurations alternating"
printf '%-5s %3s %12s %12s %8s %16s %8s\n' test P metering-on metering-off on/off "off, SET EX" "on/that"
for test in get set; do
  for p in 1 16; do
    on=(); off=(); off_ex=()
    for _ in $(seq "$ROUNDS"); do
      on+=("$(rps "$ON_PORT" "$test" "$p")")
      off+=("$(rps "$OFF_PORT" "$test" "$p")")
      [ "$test" = set ] && off_ex+=("$(rps_set_ex "$OFF_PORT" "$p")")
    done
    m_on=$(printf '%s\n' "${on[@]}" | median)
    m_off=$(printf '%s\n' "${off[@]}" | median)
    if [ "$test" = set ]; then
      m_ex=$(printf '%s\n' "${off_ex[@]}" | median)
      printf '%-5s %3s %12s %12s %8s %16s %8s\n' "$test" "$p" "$m_on" "$m_off" "$(ratio "$m_on" "$m_off")" "$m_ex" "$(ratio "$m_on" "$m_ex")"
    else
      printf '%-5s %3s %12s %12s %8s %16s %8s\n' "$test" "$p" "$m_on" "$m_off" "$(ratio "$m_on" "$m_off")" - -
    fi
  done
done
