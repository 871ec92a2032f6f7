"""Flask-Limiter through pkv (`limits` storage `redis://`): an endpoint limited to
`2 per minute` answers 200, 200, then 429, with each of the rate-limiting strategies
`limits` offers. Flask's test client, no server. Exits 0 only if every strategy does.

Usage: PKV_APP_URL=redis://:<token>@host:port/0 flask_limiter_test.py
"""

import os
import sys

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

url = os.environ["PKV_APP_URL"]
failed = False
for strategy in ("fixed-window", "moving-window", "sliding-window-counter"):
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, storage_uri=url, strategy=strategy,
                      key_prefix=f"apps-{strategy}")

    @app.route("/hello")
    @limiter.limit("2 per minute")
    def hello():
        return "hello"

    client = app.test_client()
    codes = [client.get("/hello").status_code for _ in range(3)]
    ok = codes == [200, 200, 429]
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {strategy}: {codes}")
sys.exit(1 if failed else 0)
