#!/usr/bin/env bash
# User-space instructions per request, pkv against twemproxy: a figure that, unlike requests
# per second, does not drift with the load of a shared machine.
#
#   scripts/callgrind.sh [requests at P=1] [requests at P=16]
#
# Starts a private redis-server, twemproxy (Debian's nutcracker, one server connection) in
# front of it, and pkv in front of it as scripts/bench.sh runs it: a trusted issuer, a real
# quota token (redis-benchmark -a), metering and namespacing on. Both proxies run under
# `valgrind --tool=callgrind`; redis-server and redis-benchmark run natively. For each test
# (SET and GET, pipelines of 1 and 16; 10 clients, 64-byte values, 1,000 keys that a warm-up
# has filled, so every GET finds a value) the proxy's counters are zeroed
# (`callgrind_control -z`), redis-benchmark runs a fixed number of requests, and the
# counters are dumped (`callgrind_control -d`); Ir (instructions executed) in the dump over
# the number of requests is the figure. The warm-up also has pkv check the token's
# signature once, as a long-running pkv would have, so no test pays for it. What a test
# counts includes the 10 connections' set-up (and, for pkv, each one's cached AUTH).
#
# PKV_METERING=off or PKV_THREADS=n in the environment are passed on to pkv. With
# PKV_EMBEDDED=1, pkv serves from its embedded store instead of the redis-server (twemproxy
# still relays to it, as the reference); PKV_BINARY=<path> measures another pkv build.
#
# Needs: valgrind, redis-server, redis-benchmark (redis-tools), nutcracker, python3.
set -euo pipefail

if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi

N1=${1:-20000}
N16=${2:-160000}
CLIENTS=10
SIZE=64
KEYS=1000

for tool in valgrind callgrind_control redis-server redis-benchmark nutcracker python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind redis-server redis-tools nutcracker)" >&2; exit 1; }
done

source "$(dirname "$0")/bench-common.sh"

# Only the dumps that callgrind_control asks for are read (not the one at exit);
# --dump-instr=no and --collect-jumps=no keep them small.
CALLGRIND=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no)

TWEM_PORT=$(free_port)
twemproxy_config
mkdir "$WORK/twem" "$WORK/pkv"
(cd "$WORK/twem" && exec "${CALLGRIND[@]}" --log-file="$WORK/twem/valgrind.log" \
  nutcracker -c "$WORK/nutcracker.yml" -o "$WORK/nutcracker.log") &
TWEM_PID=$!
track "$TWEM_PID"

new_issuer
PKV_PORT=$(free_port)
UPSTREAM="redis://127.0.0.1:$REDIS_PORT"
[ "${PKV_EMBEDDED:-}" = 1 ] && UPSTREAM=
(cd "$WORK/pkv" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PKV_PORT" ${UPSTREAM:+PKV_UPSTREAM_URL="$UPSTREAM"} \
  PKV_QUOTA_ISSUERS="$DID" PKV_SECRET_SEED="$SECRET" PKV_LOG=warn \
  PKV_METERING="${PKV_METERING:-on}" PKV_THREADS="${PKV_THREADS:-0}" \
  "${CALLGRIND[@]}" --log-file="$WORK/pkv/valgrind.log" "$PKV" >/dev/null 2>&1) &
PKV_PID=$!
track "$PKV_PID"
# Start-up under valgrind takes seconds, not milliseconds.
for _ in $(seq 600); do
  (echo > "/dev/tcp/127.0.0.1/$TWEM_PORT") 2>/dev/null && (echo > "/dev/tcp/127.0.0.1/$PKV_PORT") 2>/dev/null && break
  sleep 0.1
done
wait_port "$TWEM_PORT"
wait_port "$PKV_PORT"
mint_token

load() { # port test pipeline requests [auth]
  local auth=()
  [ -n "${5:-}" ] && auth=(-a "$5")
  redis-benchmark -p "$1" "${auth[@]}" -t "$2" -P "$3" -n "$4" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" -q >/dev/null 2>&1
}

# Total Ir of the newest dump of process $1 (the "totals:" line; "summary:" in older
# formats).
last_ir() {
  local file
  file=$(ls -t "$WORK"/*/callgrind.out."$1".* | head -1)
  awk '/^(totals|summary):/ { print $2; exit }' "$file"
}

# Instructions per request of one test: zero, run, dump.
measure() { # pid port test pipeline requests [auth]
  callgrind_control -z "$1" >/dev/null 2>&1
  load "$2" "$3" "$4" "$5" "${6:-}"
  sleep 0.5 # the proxy closes the 10 connections: that is part of the test too
  callgrind_control -d "$1" >/dev/null 2>&1
  awk -v ir="$(last_ir "$1")" -v n="$5" 'BEGIN { printf "%.0f", ir / n }'
}

# Warm-up: fill the keys through each proxy, and have pkv verify the token once.
load "$TWEM_PORT" set 1 $((KEYS * 20))
load "$PKV_PORT" set 1 $((KEYS * 20)) "$TOKEN"

echo "Instructions (Ir, user space) per request under callgrind: redis-benchmark -c $CLIENTS -d $SIZE -r $KEYS,"
echo "-n $N1 at P=1 and -n $N16 at P=16; pkv with metering ${PKV_METERING:-on}, threads ${PKV_THREADS:-0} (0 = one per core)${UPSTREAM:-, on its embedded store}"
echo "$(valgrind --version), $(redis-benchmark --version | awk '{ print $1, $2 }'), $(nutcracker --version 2>&1 | awk '{ print $3 }' | head -1); pkv ${PKV_BINARY:-$(git -C "$ROOT" rev-parse --short HEAD)}; $(date -u +%Y-%m-%d)"
echo
printf '| %-4s | %2s | %10s | %16s | %13s |\n' test P "pkv Ir/req" "twemproxy Ir/req" "pkv/twemproxy"
printf '| %-4s | %2s | %10s | %16s | %13s |\n' --- -- --- --- ---
for p in 1 16; do
  n=$N1
  [ "$p" = 16 ] && n=$N16
  for test in get set; do
    twem=$(measure "$TWEM_PID" "$TWEM_PORT" "$test" "$p" "$n")
    pkv=$(measure "$PKV_PID" "$PKV_PORT" "$test" "$p" "$n" "$TOKEN")
    printf '| %-4s | %2s | %10s | %16s | %13s |\n' "$test" "$p" "$pkv" "$twem" \
      "$(awk -v a="$pkv" -v b="$twem" 'BEGIN { printf "%.2f", a / b }')"
  done
done
