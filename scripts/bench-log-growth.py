#!/usr/bin/env python3
"""What one small write into a big key costs the embedded store's append-only log.

Starts PKV (a pkv binary) on its embedded store with PKV_DATA_FILE and
PKV_APPENDFSYNC=always in development mode, builds a hash, list, set, sorted set, stream
and string of SIZE_MB each (in 4 MB commands), then sends WRITES one-element writes to
each (HSET, LPUSH, SADD, ZADD, XADD, APPEND) and prints, per type, the log bytes and the
milliseconds per write.

    scripts/bench-log-growth.py PKV [SIZE_MB] [WRITES]
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

PKV = os.path.abspath(sys.argv[1])
SIZE = int(sys.argv[2]) << 20 if len(sys.argv) > 2 else 50 << 20
WRITES = int(sys.argv[3]) if len(sys.argv) > 3 else 20
CHUNK = 4 << 20


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        return rest

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()


def main():
    work = tempfile.mkdtemp()
    data = os.path.join(work, "pkv.data")
    env = {"PATH": os.environ.get("PATH", ""), "PKV_LISTEN": "127.0.0.1:0", "PKV_LOG": "warn",
           "PKV_DATA_FILE": data, "PKV_APPENDFSYNC": "always", "PKV_SNAPSHOT_SECONDS": "3600"}
    proc = subprocess.Popen([PKV], env=env, cwd=work, stdout=subprocess.PIPE, text=True)
    port = None
    for line in proc.stdout:
        if "pkv listening on" in line:
            port = int(line.rsplit(":", 1)[1])
            break
    token = subprocess.run([PKV, "token", "mint", "--quantity", "1000000"], env=env, cwd=work,
                           capture_output=True, text=True, check=True).stdout.strip()
    conn = Conn(port)
    conn.call("AUTH", token)
    log = data + ".aof"
    element = lambda i: b"%0200d" % i
    per = CHUNK // 200
    builds = {
        "hash": lambda c: ["HSET", "hash"] + [x for i in range(c * per, c * per + per // 2) for x in (element(i), element(i))],
        "list": lambda c: ["RPUSH", "list"] + [element(i) for i in range(c * per, (c + 1) * per)],
        "set": lambda c: ["SADD", "set"] + [element(i) for i in range(c * per, (c + 1) * per)],
        "zset": lambda c: ["ZADD", "zset"] + [x for i in range(c * per, (c + 1) * per) for x in (i, element(i))],
        "stream": lambda c: ["XADD", "stream", "*"] + [x for i in range(c * per, c * per + per // 2) for x in (element(i), element(i))],
        "string": lambda c: ["APPEND", "string", b"x" * CHUNK],
    }
    writes = {
        "hash": lambda i: ["HSET", "hash", "f%d" % i, "v"],
        "list": lambda i: ["LPUSH", "list", "e%d" % i],
        "set": lambda i: ["SADD", "set", "m%d" % i],
        "zset": lambda i: ["ZADD", "zset", i, "m%d" % i],
        "stream": lambda i: ["XADD", "stream", "*", "f", i],
        "string": lambda i: ["APPEND", "string", "0123456789"],
    }
    print(f"{SIZE >> 20} MB keys, {WRITES} writes each, PKV_APPENDFSYNC=always")
    print(f"{'type':8} {'command':8} {'log bytes/write':>16} {'ms/write':>9}")
    for kind, build in builds.items():
        for c in range(SIZE // CHUNK):
            conn.call(*build(c))
        before = os.path.getsize(log)
        started = time.perf_counter()
        for i in range(WRITES):
            conn.call(*writes[kind](i))
        elapsed = time.perf_counter() - started
        grown = os.path.getsize(log) - before
        print(f"{kind:8} {writes[kind](0)[0]:8} {grown // WRITES:>16} {elapsed * 1000 / WRITES:>9.2f}")
    proc.terminate()
    proc.wait()
    subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
