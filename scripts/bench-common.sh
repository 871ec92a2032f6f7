# Shared by the benchmark scripts (sourced, not run): a release build, a scratch directory,
# processes that are stopped on exit, free ports, and a private redis-server.
#
# After sourcing: ROOT (the repository), PKV (the release binary), WORK (scratch directory),
# REDIS_PORT (a running private redis-server); `track PID` stops PID on exit.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release -q
PKV=$ROOT/target/release/pkv
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
