"""redis-py's Lock through pkv, with contention: several threads take the same lock,
extend it while they hold it, and each does a read-modify-write on a counter; the
counter ends exact only if the lock excluded them. Lock's extend and release are
EVALSHA scripts (with EVAL / SCRIPT LOAD behind them).

Usage: redis_py_lock.py <redis-url> <threads> <rounds>; prints the counter and exits 0
when it is threads * rounds.
"""
import sys
import threading

import redis

url, threads, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
errors = []


def worker():
    client = redis.Redis.from_url(url)
    try:
        for _ in range(rounds):
            lock = client.lock("lock:counter", timeout=5, blocking_timeout=30)
            if not lock.acquire():
                errors.append("not acquired")
                return
            try:
                value = int(client.get("counter") or 0)
                lock.extend(5)
                client.set("counter", value + 1)
            finally:
                lock.release()
    except Exception as e:  # the test prints why
        errors.append(repr(e))


workers = [threading.Thread(target=worker) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
client = redis.Redis.from_url(url)
counter = int(client.get("counter") or 0)
# A lock that was released is gone; releasing it again is refused by the script.
lock = client.lock("lock:other", timeout=5)
lock.acquire()
lock.release()
try:
    lock.release()
    errors.append("a second release was accepted")
except redis.exceptions.LockError:
    pass
print(counter)
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
sys.exit(0 if counter == threads * rounds else 1)
