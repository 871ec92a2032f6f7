#!/usr/bin/env bash
# What a TLS connection costs pkv, against a plain one: N connections one after another,
# each connect (+ a full TLS handshake, no session resumption), AUTH with a real quota
# token, PING, QUIT.
#
#   scripts/tls-cost.sh [connections] [ec|rsa]
#
# Prints wall time per connection (pkv native, the client in Python's ssl module, on one
# machine: the client's share of the handshake is in it too), then pkv's own user-space
# instructions per connection under `valgrind --tool=callgrind` (counters zeroed before and
# dumped after each run, as scripts/callgrind.sh does). The certificate is made here with
# the openssl command line: ECDSA P-256 (ec, the default) or RSA 2048 (rsa).
#
# Needs: valgrind, redis-server, openssl, python3.
set -euo pipefail

N=${1:-1000}
KEY=${2:-ec}

for tool in valgrind callgrind_control redis-server openssl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind redis-server openssl python3)" >&2; exit 1; }
done

source "$(dirname "$0")/bench-common.sh"

case "$KEY" in
  ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  rsa) NEWKEY=(-newkey rsa:2048) ;;
  *) echo "key type: ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

ISSUER=$("$PKV" keygen)
SEED=$(awk '/^seed:/ { print $2 }' <<<"$ISSUER")
DID=$(awk '/^did:/ { print $2 }' <<<"$ISSUER")
SECRET=$("$PKV" keygen | awk '/^seed:/ { print $2 }')
TOKEN=$(cd "$WORK" && env -i PATH="$PATH" "$PKV" token mint --issuer-seed "$SEED" --quantity 1000000 --lifetime 86400)

cat > "$WORK/client.py" <<'PY'
import socket, ssl, sys, time
port, n, token, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tls = sys.argv[5] == "tls"
ctx = ssl.create_default_context(cafile=cafile)
auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(token), token.encode())
def expect(s, want):
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("closed early after %r" % got)
        got += chunk
    if got != want:
        raise SystemExit("unexpected reply %r" % got)
start = time.perf_counter()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(auth); expect(s, b"+OK\r\n")
    s.sendall(b"*1\r\n$4\r\nPING\r\n"); expect(s, b"+PONG\r\n")
    s.sendall(b"*1\r\n$4\r\nQUIT\r\n"); expect(s, b"+OK\r\n")
    s.close()
print("%.1f" % ((time.perf_counter() - start) / n * 1e6))
PY

start_pkv() { # dir [wrapper...]; sets PLAIN_PORT, TLS_PORT, PKV_PID
  local dir=$1
  shift
  mkdir -p "$dir"
  PLAIN_PORT=$(free_port)
  TLS_PORT=$(free_port)
  (cd "$dir" && exec env -i PATH="$PATH" PKV_LISTEN="127.0.0.1:$PLAIN_PORT" \
    PKV_TLS_LISTEN="127.0.0.1:$TLS_PORT" PKV_TLS_CERT="$WORK/cert.pem" PKV_TLS_KEY="$WORK/key.pem" \
    PKV_UPSTREAM_URL="redis://127.0.0.1:$REDIS_PORT" PKV_QUOTA_ISSUERS="$DID" \
    PKV_SECRET_SEED="$SECRET" PKV_LOG=warn PKV_THREADS=1 "$@" "$PKV" >/dev/null 2>&1) &
  PKV_PID=$!
  track "$PKV_PID"
  for _ in $(seq 600); do
    (echo > "/dev/tcp/127.0.0.1/$PLAIN_PORT") 2>/dev/null && (echo > "/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break
    sleep 0.1
  done
  wait_port "$PLAIN_PORT"
  wait_port "$TLS_PORT"
}

run() { # port plain|tls count
  python3 "$WORK/client.py" "$1" "$3" "$TOKEN" "$WORK/cert.pem" "$2"
}

echo "pkv $(git -C "$ROOT" rev-parse --short HEAD), PKV_THREADS=1, $KEY certificate, $N connections each;"
echo "per connection: connect, (TLS handshake,) AUTH, PING, QUIT. $(date -u +%Y-%m-%d)"
echo

# Wall time, pkv native. A warm-up redeems the token and warms both paths.
start_pkv "$WORK/native"
run "$PLAIN_PORT" plain 50 >/dev/null
run "$TLS_PORT" tls 50 >/dev/null
plain_us=$(run "$PLAIN_PORT" plain "$N")
tls_us=$(run "$TLS_PORT" tls "$N")
kill "$PKV_PID"
wait "$PKV_PID" 2>/dev/null || true

# Instructions, pkv under callgrind.
start_pkv "$WORK/cg" valgrind --tool=callgrind --dump-instr=no --collect-jumps=no --log-file="$WORK/cg/valgrind.log"
run "$PLAIN_PORT" plain 20 >/dev/null
run "$TLS_PORT" tls 20 >/dev/null
last_ir() {
  local file
  file=$(ls -t "$WORK"/cg/callgrind.out."$PKV_PID".* | head -1)
  awk '/^(totals|summary):/ { print $2; exit }' "$file"
}
measure() { # port plain|tls
  callgrind_control -z "$PKV_PID" >/dev/null 2>&1
  run "$1" "$2" "$N" >/dev/null
  sleep 0.5
  callgrind_control -d "$PKV_PID" >/dev/null 2>&1
  awk -v ir="$(last_ir)" -v n="$N" 'BEGIN { printf "%.0f", ir / n }'
}
plain_ir=$(measure "$PLAIN_PORT" plain)
tls_ir=$(measure "$TLS_PORT" tls)

printf '| %-5s | %16s | %18s |\n' path "wall µs/conn" "pkv Ir/conn"
printf '| %-5s | %16s | %18s |\n' --- --- ---
printf '| %-5s | %16s | %18s |\n' plain "$plain_us" "$plain_ir"
printf '| %-5s | %16s | %18s |\n' tls "$tls_us" "$tls_ir"
printf '| %-5s | %16s | %18s |\n' extra \
  "$(awk -v a="$tls_us" -v b="$plain_us" 'BEGIN { printf "%.1f", a - b }')" \
  "$(awk -v a="$tls_ir" -v b="$plain_ir" 'BEGIN { printf "%.0f", a - b }')"
