"""RQ through pkv: `rq worker --with-scheduler` runs a job to FINISHED and its
`return_value()` is readable; a job enqueued with `enqueue_in` is moved by the scheduler
and runs too. Exits 0 only if both happen; prints the worker's output when anything fails.

Usage: PKV_APP_URL=redis://:<token>@host:port/0 rq_test.py
"""

import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta, timezone

from redis import Redis
from rq import Queue
from rq.job import JobStatus

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from rq_jobs import add  # noqa: E402

url = os.environ["PKV_APP_URL"]
log = tempfile.NamedTemporaryFile(prefix="rq-worker-", suffix=".log", delete=False)
worker = subprocess.Popen(
    [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--with-scheduler",
     "--url", url, "apps"],
    cwd=here, env=dict(os.environ, PYTHONPATH=here), stdout=log, stderr=subprocess.STDOUT,
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


def wait_for(job, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = job.get_status(refresh=True)
        if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED,
                      JobStatus.CANCELED):
            return status
        if worker.poll() is not None:
            fail(f"the worker exited with {worker.returncode}")
        time.sleep(0.1)
    return job.get_status(refresh=True)


queue = Queue("apps", connection=Redis.from_url(url))
try:
    job = queue.enqueue(add, 2, 3)
    status = wait_for(job, 30)
    if status != JobStatus.FINISHED:
        fail(f"the job ended {status}: {job.latest_result() and job.latest_result().exc_string}")
    value = job.return_value()
    if value != 5:
        fail(f"job.return_value() is {value!r}, not 5")
    print(f"ok   a job ran to {status} and return_value() is {value}")

    enqueued = time.time()
    later = queue.enqueue_in(timedelta(seconds=1), add, 20, 22)
    if later.get_status(refresh=True) != JobStatus.SCHEDULED:
        fail(f"the enqueue_in job is {later.get_status()}, not scheduled")
    status = wait_for(later, 30)
    if status != JobStatus.FINISHED or later.return_value() != 42:
        fail(f"the enqueue_in job ended {status} with {later.return_value()!r}")
    # RQ keeps the time a job is due in whole seconds (the scheduled registry's score is
    # the due time's epoch second, rounded down), so the job may start up to 1 s early.
    later.refresh()
    started = later.started_at
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    waited = started.timestamp() - enqueued
    if started.timestamp() < int(enqueued + 1):
        fail(f"the enqueue_in job started {waited:.2f} s after it was enqueued, before its time")
    print(f"ok   a job enqueued in 1 s started after {waited:.1f} s, return_value() 42")
except SystemExit:
    raise
except Exception as e:
    fail(repr(e))

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
