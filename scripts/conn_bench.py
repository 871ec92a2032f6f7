#!/usr/bin/env python3
"""pkv's cost per idle authenticated connection, and the cost of an AUTH storm.

Opens 1,000 then 10,000 connections that each AUTH with the same quota token and stay open,
reading pkv's resident memory (VmRSS) before and after; then times 1,000 new connections
that AUTH against 1,000 GETs on one connection and 1,000 new connections that only PING.
Used by scripts/bench.sh; runs on its own against any pkv:

    scripts/conn_bench.py --port 6380 --pid <pkv pid> --token <quota token>
"""
import argparse
import socket
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def authed(port, token):
    s = connect(port)
    s.sendall(command("AUTH", token))
    reply = read_line(s)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"AUTH refused: {reply!r}")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()

    # Warm up: the first AUTH redeems the token and fills the verification cache.
    authed(args.port, args.token).close()
    time.sleep(0.2)
    base = rss_kib(args.pid)
    conns = []
    print("| idle authenticated connections | pkv RSS (MiB) | per connection (KiB) |")
    print("| --- | --- | --- |")
    print(f"| 0 | {base / 1024:.1f} | - |")
    for target in (1000, 10000):
        while len(conns) < target:
            conns.append(authed(args.port, args.token))
        time.sleep(0.5)
        rss = rss_kib(args.pid)
        print(f"| {target} | {rss / 1024:.1f} | {(rss - base) / target:.1f} |")
    for c in conns:
        c.close()
    time.sleep(0.5)

    n = 1000
    start = time.perf_counter()
    for _ in range(n):
        authed(args.port, args.token).close()
    auth_storm = time.perf_counter() - start

    conn = authed(args.port, args.token)
    start = time.perf_counter()
    for _ in range(n):
        conn.sendall(command("GET", "some-key"))
        read_line(conn)
    gets = time.perf_counter() - start
    conn.close()

    start = time.perf_counter()
    for _ in range(n):
        s = connect(args.port)
        s.sendall(command("PING"))
        read_line(s)
        s.close()
    pings = time.perf_counter() - start

    print()
    print("| 1,000 sequential ... | total (ms) | per operation (µs) |")
    print("| --- | --- | --- |")
    for name, t in (
        ("new connections, AUTH with the same token", auth_storm),
        ("new connections, PING only (connection cost)", pings),
        ("GETs on one authenticated connection", gets),
    ):
        print(f"| {name} | {t * 1000:.1f} | {t * 1e6 / n:.1f} |")
    print(f"\nAUTH storm / GETs: {auth_storm / gets:.2f}; AUTH storm / PING storm: {auth_storm / pings:.2f}")


if __name__ == "__main__":
    main()
