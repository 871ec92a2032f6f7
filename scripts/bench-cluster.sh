#!/usr/bin/env bash
# pkv in front of a Redis Cluster of one master against one of three masters, and each
# against redis-benchmark --cluster talking to the same cluster direct, side by side in one
# run: redis-benchmark GET and SET at pipelines of 1 and 16. Prints requests per second and
# ratios. The direct figures are redis-benchmark --cluster on the three masters, plain
# redis-benchmark on the one (which owns every slot).
#
#   scripts/bench-cluster.sh [requests] [rounds]
#
# Every node runs on this machine, so the one-master/three-master ratio is what routing by
# slot costs (pipelines split per master, replies put back in order), not what more masters
# add in capacity. The one-master "cluster" is one node that owns all 16384 slots
# (redis-cli --cluster create wants three masters at least). pkv's ledger is on the private
# redis-server bench-common.sh starts.
#
# Needs redis-server, redis-cli and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

REQUESTS=${1:-100000}
ROUNDS=${2:-3}
CLIENTS=50
SIZE=64
KEYS=100000

source "$(dirname "$0")/bench-common.sh"

start_node() { # sets NODE: the port of a new cluster-enabled redis-server
  local port dir
  port=$(free_port)
  dir=$(mktemp -d -p "$WORK")
  # The bus port is named: port + 10000 may be past 65535.
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "$(free_port)" \
    >/dev/null &
  track $!
  wait_port "$port"
  NODE=$port
}

cluster_ok() { # port...
  for port in "$@"; do
    for _ in $(seq 400); do
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' && continue 2
      sleep 0.05
    done
    echo "cluster on $port never ok" >&2
    exit 1
  done
}

# One master with every slot.
start_node; ONE=$NODE
redis-cli -p "$ONE" cluster addslotsrange 0 16383 >/dev/null
cluster_ok "$ONE"
# Three masters, no replicas.
THREE=()
for _ in 1 2 3; do start_node; THREE+=("$NODE"); done
redis-cli --cluster create "${THREE[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
cluster_ok "${THREE[@]}"
# Every node sees three masters before anyone reads the slot map.
for port in "${THREE[@]}"; do
  for _ in $(seq 400); do
    [ "$(redis-cli -p "$port" cluster nodes | grep -c master)" = 3 ] && continue 2
    sleep 0.05
  done
done

start_pkv() { # $1 = upstream URL; sets PORT
  PORT=$(free_port)
  local dir
  dir=$(mktemp -d -p "$WORK")
  (cd "$dir" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PORT" PKV_UPSTREAM_URL="$1" \
     PKV_LEDGER_URL="redis://127.0.0.1:$REDIS_PORT" PKV_LOG=warn "$PKV" >/dev/null 2>&1) &
  track $!
  wait_port "$PORT"
}
start_pkv "redis+cluster://127.0.0.1:$ONE"; PKV_ONE=$PORT
start_pkv "redis+cluster://127.0.0.1:${THREE[0]}"; PKV_THREE=$PORT
# Development mode: the development issuer signs; a large quantity never runs out here.
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --quantity 1000000 --lifetime 86400)

rps() { # port test pipeline [options...]
  local port=$1 test=$2 p=$3
  shift 3
  redis-benchmark -p "$port" "$@" -t "$test" -P "$p" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" --csv 2>/dev/null \
    | awk -F'","' '/^"(GET|SET)"/ { gsub(/"/, "", $2); print int($2); exit }'
}
via_pkv() { rps "$1" "$2" "$3" -a "$TOKEN"; }
direct() { rps "$1" "$2" "$3" --cluster; }
# redis-benchmark --cluster refuses a one-node cluster; that node owns every slot, so plain
# redis-benchmark on it is never redirected. (--cluster prints the masters before its CSV.)
direct_one() { rps "$1" "$2" "$3"; }

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# Fill every key first, so that GETs find values everywhere.
via_pkv "$PKV_ONE" set 16 >/dev/null
via_pkv "$PKV_THREE" set 16 >/dev/null
direct_one "$ONE" set 16 >/dev/null
direct "${THREE[0]}" set 16 >/dev/null

echo "redis-benchmark -n $REQUESTS -c $CLIENTS -d $SIZE -r $KEYS, median of $ROUNDS rounds, configurations alternating"
printf '%-4s %3s %10s %10s %10s %10s %10s %10s %10s\n' test P pkv-1m pkv-3m direct-1m direct-3m pkv3/pkv1 pkv1/dir1 pkv3/dir3
for test in get set; do
  for p in 1 16; do
    a=() b=() c=() d=()
    for _ in $(seq "$ROUNDS"); do
      a+=("$(via_pkv "$PKV_ONE" "$test" "$p")")
      b+=("$(via_pkv "$PKV_THREE" "$test" "$p")")
      c+=("$(direct_one "$ONE" "$test" "$p")")
      d+=("$(direct "${THREE[0]}" "$test" "$p")")
    done
    ma=$(printf '%s\n' "${a[@]}" | median)
    mb=$(printf '%s\n' "${b[@]}" | median)
    mc=$(printf '%s\n' "${c[@]}" | median)
    md=$(printf '%s\n' "${d[@]}" | median)
    printf '%-4s %3s %10s %10s %10s %10s %10s %10s %10s\n' "$test" "$p" "$ma" "$mb" "$mc" "$md" \
      "$(ratio "$mb" "$ma")" "$(ratio "$ma" "$mc")" "$(ratio "$mb" "$md")"
  done
done
