"""A Celery app whose broker and result backend are both pkv (PKV_APP_URL, a redis:// URL
with the token as password). Imported by the worker that celery_test.py starts and by the
caller in celery_test.py."""

import os

from celery import Celery

app = Celery("pkv_apps", broker=os.environ["PKV_APP_URL"], backend=os.environ["PKV_APP_URL"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    # A refused command must fail the test, not be retried until the runner's timeout.
    broker_connection_max_retries=3,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task
def total(numbers):
    return sum(numbers)
