"""Celery through pkv: a worker (`celery worker`, prefork, one child) starts, a caller
sends `add(2, 3)` and `AsyncResult.get` brings back 5, a chord's body gets its header's
results, and `celery inspect ping` gets the worker's pong. Exits 0 only if all of that happens; the worker's output is printed when
anything fails.

Usage: PKV_APP_URL=redis://:<token>@host:port/0 celery_test.py
"""

import os
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
bin_dir = os.path.dirname(sys.executable)
env = dict(os.environ, PYTHONPATH=here)
log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)
worker = subprocess.Popen(
    [os.path.join(bin_dir, "celery"), "-A", "celery_app", "worker", "--concurrency=1",
     "--hostname=apps@%h", "--loglevel=INFO"],
    cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT,
)


def fail(why):
    print(f"FAIL {why}")
    worker.terminate()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()
    with open(log.name, encoding="utf-8", errors="replace") as f:
        print("--- worker log (last 60 lines)\n" + "".join(f.readlines()[-60:]))
    sys.exit(1)


sys.path.insert(0, here)
from celery import chord  # noqa: E402
from celery_app import add, app, total  # noqa: E402

# The worker is ready when it answers a ping; it may die on start-up instead. An error in
# the caller fails at once: retrying it would hide a refused command (kombu's Mutex, which
# releases its lock with a script, runs in whichever process polls first, and a release
# that fails leaves the lock held, so the other process then skips it).
deadline = time.monotonic() + 40
while True:
    if worker.poll() is not None:
        fail(f"the worker exited with {worker.returncode} before it answered a ping")
    try:
        if app.control.inspect(timeout=1).ping():
            break
    except Exception as e:
        fail(f"app.control.inspect().ping(): {e!r}")
    if time.monotonic() > deadline:
        fail("no pong from the worker within 40 s")
print("ok   the worker started and answers app.control.ping")

try:
    result = add.delay(2, 3)
    value = result.get(timeout=30)
except Exception as e:
    fail(f"add.delay(2, 3).get(): {e!r}")
if value != 5 or result.status != "SUCCESS":
    fail(f"add(2, 3) came back {value!r} with status {result.status}")
print(f"ok   add.delay(2, 3).get() == 5, status {result.status}")

# A chord: the result backend counts the header's results in a MULTI pipeline and the
# last one starts the body.
try:
    value = chord(add.s(i, i) for i in range(5))(total.s()).get(timeout=30)
except Exception as e:
    fail(f"chord(add x5)(total): {e!r}")
if value != 20:
    fail(f"chord(add x5)(total) came back {value!r}, not 20")
print("ok   a chord of five adds and a total came back 20")

ping = subprocess.run(
    [os.path.join(bin_dir, "celery"), "-A", "celery_app", "inspect", "ping", "--timeout=5"],
    cwd=here, env=env, capture_output=True, text=True, timeout=60,
)
if ping.returncode != 0 or "pong" not in ping.stdout:
    fail(f"celery inspect ping exited {ping.returncode}:\n{ping.stdout}{ping.stderr}")
print("ok   celery inspect ping: " + " ".join(ping.stdout.split())[:80])

# A warm shutdown, as an operator stops a worker; it must not hang.
worker.terminate()
try:
    code = worker.wait(30)
except subprocess.TimeoutExpired:
    fail("the worker did not stop within 30 s of SIGTERM")
if code != 0:
    fail(f"the worker exited with {code} on SIGTERM")
print("ok   the worker stopped cleanly")
# A worker can log an error and carry on: any command pkv refused fails the test.
with open(log.name, encoding="utf-8", errors="replace") as f:
    refused = [line.strip() for line in f if "through pkv" in line]
if refused:
    fail("the worker logged refusals: " + "; ".join(refused[:5]))
os.unlink(log.name)
