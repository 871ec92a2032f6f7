# Shared by the benchmark scripts (sourced, not run): a release build, a scratch directory,
# processes that are stopped on exit, free ports, and a private redis-server.
#
# After sourcing: ROOT (the repository), PKV (the release binary, built first; or PKV_BINARY
# as it is), WORK (scratch directory),
# REDIS_PORT (a running private redis-server); `track PID` stops PID on exit. The scripts that
# compare pkv with twemproxy also call `twemproxy_config`, `new_issuer` and `mint_token`.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -n "${PKV_BINARY:-}" ] || cargo build --release -q
PKV=${PKV_BINARY:-$ROOT/target/release/pkv}
WORK=$(mktemp -d)
PIDS=()
track() { PIDS+=("$1"); }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Let them exit (a process under valgrind writes its last dump) before removing their files.
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  exit 1
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null &
track $!
wait_port "$REDIS_PORT"

# Writes $WORK/nutcracker.yml: twemproxy (Debian's nutcracker) listening on TWEM_PORT, with
# one connection to the private redis-server, as the comparisons run it.
twemproxy_config() {
  cat > "$WORK/nutcracker.yml" <<YAML
pkvbench:
  listen: 127.0.0.1:$TWEM_PORT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: 1
  servers:
   - 127.0.0.1:$REDIS_PORT:1
YAML
}

# A real issuer and secret, so that pkv runs as in production, not in development mode:
# sets SEED and DID (the quota issuer pkv trusts) and SECRET (pkv's PKV_SECRET_SEED).
new_issuer() {
  local issuer
  issuer=$("$PKV" keygen)
  SEED=$(awk '/^seed:/ { print $2 }' <<<"$issuer")
  DID=$(awk '/^did:/ { print $2 }' <<<"$issuer")
  SECRET=$("$PKV" keygen | awk '/^seed:/ { print $2 }')
}

# Sets TOKEN: a quota token of SEED's issuer, large enough for any run.
mint_token() {
  TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --issuer-seed "$SEED" --quantity 1000000 --lifetime 86400)
}
