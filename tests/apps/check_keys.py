"""After an app ran: every key it created is in its account's namespace and has a TTL.

Through pkv (as the tenant, with the app's token): `KEYS *` lists the app's keys and each
has `PTTL` > 0. With --direct (pkv over a redis-server): a second, raw connection to the
redis-server finds exactly those keys under `pkv:t:<account>:` (src/namespace.rs), each
with a TTL there too, and no key outside `pkv:ledger:` and the namespaces of the accounts
listed in --accounts (the apps run so far, one per line).

Usage: check_keys.py <pkv-url-with-token> [--direct <redis-url>] [--accounts FILE]
"""

import argparse
import sys

import redis

parser = argparse.ArgumentParser()
parser.add_argument("pkv")
parser.add_argument("--direct")
parser.add_argument("--accounts")
args = parser.parse_args()

problems = []
tenant = redis.Redis.from_url(args.pkv)
balance = tenant.execute_command("PKV.BALANCE")
account = dict(zip(balance[::2], balance[1::2]))[b"account"].decode()
keys = set(tenant.keys("*"))
if not keys:
    problems.append("the app left no key at all (the check would prove nothing)")
for key in sorted(keys):
    ttl = tenant.pttl(key)
    if ttl == -1:
        problems.append(f"through pkv: {key!r} has no TTL")


def escape(account):
    """src/namespace.rs escape_account: [A-Za-z0-9_.-] stay, every other byte is %XX."""
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.") else f"%{b:02X}"
        for b in account.encode()
    )


checked = len(keys)
if args.direct:
    accounts = {account}
    if args.accounts:
        with open(args.accounts, encoding="utf-8") as f:
            accounts |= {line.strip() for line in f if line.strip()}
    prefixes = {f"pkv:t:{escape(a)}:".encode() for a in accounts}
    prefix = f"pkv:t:{escape(account)}:".encode()
    raw = redis.Redis.from_url(args.direct)
    mine = set()
    for key in raw.scan_iter(count=1000):
        if key.startswith(b"pkv:ledger:"):
            continue
        if key.startswith(prefix):
            mine.add(key[len(prefix):])
            if raw.pttl(key) == -1:
                problems.append(f"upstream: {key!r} has no TTL")
        elif not any(key.startswith(p) for p in prefixes):
            problems.append(f"upstream: {key!r} is outside every tenant's namespace")
    # Keys can expire between the two listings (Flask-Limiter's windows, locks): compare
    # only what both still hold.
    for key in sorted(keys - mine):
        if raw.exists(prefix + key):
            problems.append(f"{key!r} is listed through pkv but not under {prefix!r} upstream")
    for key in sorted(mine - keys):
        if tenant.exists(key):
            problems.append(f"{key!r} is under {prefix!r} upstream but not listed through pkv")
    checked = len(mine)

for p in problems:
    print(f"FAIL {p}")
where = "through pkv and on the redis-server" if args.direct else "through pkv"
print(f"{'ok  ' if not problems else 'FAIL'} account {account}: {checked} keys, each in its "
      f"namespace with a TTL ({where})")
sys.exit(1 if problems else 0)
