"""redis-py's transactional pipeline with registered scripts through pkv: the scripts
are loaded before MULTI (SCRIPT EXISTS / SCRIPT LOAD) and queued as EVALSHA with the
other commands, as RQ's and BullMQ's bulk enqueues queue theirs.

Usage: redis_py_multi_scripts.py <redis-url>; prints EXEC's results, bulk strings read
as integers.
"""
import sys

import redis

client = redis.Redis.from_url(sys.argv[1])
incr = client.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
read = client.register_script("return redis.call('get', KEYS[1])")
with client.pipeline(transaction=True) as pipe:
    for _ in range(3):
        incr(keys=["c"], args=[1], client=pipe)
    pipe.set("flag", "x")
    read(keys=["c"], client=pipe)
    pipe.get("c")
    results = pipe.execute()
print([int(r) if isinstance(r, bytes) else r for r in results])
