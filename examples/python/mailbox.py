"""A mailbox service paid per use, on pkv with redis-py.

Every call it makes is paid from the balance of the quota token in PKV_TOKEN: a cache with a
TTL (a rendered inbox), counters (unread messages), a lock (SET NX PX, released only by its
holder with WATCH/MULTI, since pkv runs no scripts), the mailbox itself (a list), and
Pub/Sub (a "new mail" notice). It prints the balance before and after, and exits 0 only if
every step did what it should, so that CI notices when one breaks.

    PKV_URL=redis://127.0.0.1:6380 PKV_TOKEN=$(pkv token mint) python3 mailbox.py
"""

import json
import os
import sys
import time
import uuid

import redis


def balance(r):
    """PKV.BALANCE as a dict: account, balance, spent and the usage counters."""
    reply = r.execute_command("PKV.BALANCE")
    return dict(zip(reply[::2], reply[1::2]))


def check(what, ok):
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        sys.exit(1)


def deliver(r, user, sender, text):
    """Appends a message to USER's mailbox and counts it as unread."""
    message = json.dumps({"from": sender, "text": text, "at": int(time.time())})
    pipe = r.pipeline(transaction=False)
    pipe.rpush(f"mailbox:{user}:messages", message)
    pipe.incr(f"mailbox:{user}:unread")
    pipe.delete(f"cache:inbox:{user}")  # the rendered inbox is stale now
    pipe.publish(f"notify:{user}", sender)
    return pipe.execute()


def inbox(r, user):
    """The rendered inbox, from the cache when it is there (for 60 s)."""
    cached = r.get(f"cache:inbox:{user}")
    if cached is not None:
        return json.loads(cached), True
    messages = [json.loads(m) for m in r.lrange(f"mailbox:{user}:messages", 0, -1)]
    r.set(f"cache:inbox:{user}", json.dumps(messages), ex=60)
    return messages, False


def release(r, name, holder):
    """Deletes the lock NAME only if HOLDER still holds it (check and delete in one EXEC)."""
    with r.pipeline() as pipe:
        try:
            pipe.watch(name)
            if pipe.get(name) != holder:
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(name)
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def main():
    url = os.environ.get("PKV_URL", "redis://127.0.0.1:6380")
    token = os.environ.get("PKV_TOKEN")
    if not token:
        print("PKV_TOKEN is not set: mint one with `pkv token mint`", file=sys.stderr)
        return 2
    # The token is the password; any username (or none) will do.
    r = redis.Redis.from_url(url, password=token, decode_responses=True)

    before = balance(r)
    print(f"account {before['account']}: balance {before['balance']}")

    # Pub/Sub: alice's client listens for new mail on a connection of its own.
    listener = r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("notify:alice")
    confirmed = listener.get_message(timeout=5)  # the subscribe confirmation is skipped
    check("subscribed to notify:alice", confirmed is None)

    r.delete("mailbox:alice:messages", "mailbox:alice:unread", "cache:inbox:alice")
    pushed, unread, _, receivers = deliver(r, "alice", "bob", "lunch at noon?")
    check("a message is delivered and counted", pushed == 1 and unread == 1)
    check("alice's listener received the notice", receivers == 1)
    notice = listener.get_message(timeout=5)
    check(f"notice says who wrote: {notice and notice['data']}",
          notice is not None and notice["data"] == "bob")
    deliver(r, "alice", "carol", "the report is ready")
    check("unread counter is 2", r.get("mailbox:alice:unread") == "2")

    messages, from_cache = inbox(r, "alice")
    check("inbox rendered from the mailbox", len(messages) == 2 and not from_cache)
    messages, from_cache = inbox(r, "alice")
    check("inbox served from the cache", len(messages) == 2 and from_cache)
    ttl = r.ttl("cache:inbox:alice")
    check(f"cache entry expires (TTL {ttl} s)", 0 < ttl <= 60)

    # A lock around reading the mailbox: one holder at a time, released by its holder only.
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    lock = "lock:mailbox:alice"
    check("lock taken", r.set(lock, me, nx=True, px=5000) is True)
    check("a second holder is refused", r.set(lock, other, nx=True, px=5000) is None)
    check("someone else cannot release it", not release(r, lock, other))
    r.set("mailbox:alice:unread", 0)
    check("the holder releases it", release(r, lock, me))
    check("the lock is free again", r.set(lock, other, nx=True, px=5000) is True)
    release(r, lock, other)

    counters = [r.incr("stats:deliveries") for _ in range(3)]
    check("counter counts", counters[-1] - counters[0] == 2)

    listener.close()
    after = balance(r)
    spent = float(after["spent"]) - float(before["spent"])
    print(f"account {after['account']}: balance {after['balance']} "
          f"(this run spent {spent:.9f}, {after['ops']} commands so far)")
    check("the run was paid for", spent > 0 and float(after["balance"]) < float(before["balance"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except redis.RedisError as e:
        print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
