// A mailbox service paid per use, on pkv with ioredis: the Node twin of
// examples/python/mailbox.py. Every call is paid from the balance of the quota token in
// PKV_TOKEN: a cache with a TTL, counters, a lock (SET NX PX, released by its holder with
// WATCH/MULTI, since pkv runs no scripts), a list, and Pub/Sub. It prints the balance
// before and after and exits 0 only if every step did what it should.
//
//   PKV_URL=redis://127.0.0.1:6380 PKV_TOKEN=$(pkv token mint) node mailbox.js
"use strict";

const crypto = require("node:crypto");
const Redis = require("ioredis");

function check(what, ok) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) {
    throw new Error(`step failed: ${what}`);
  }
}

// PKV.BALANCE as an object: account, balance, spent and the usage counters.
async function balance(r) {
  const reply = await r.call("PKV.BALANCE");
  const out = {};
  for (let i = 0; i + 1 < reply.length; i += 2) {
    out[reply[i]] = reply[i + 1];
  }
  return out;
}

// Deletes the lock only if `holder` still holds it: check and delete in one EXEC.
async function release(r, name, holder) {
  await r.watch(name);
  if ((await r.get(name)) !== holder) {
    await r.unwatch();
    return false;
  }
  const result = await r.multi().del(name).exec();
  return result !== null;
}

async function main() {
  const url = process.env.PKV_URL || "redis://127.0.0.1:6380";
  const token = process.env.PKV_TOKEN;
  if (!token) {
    console.error("PKV_TOKEN is not set: mint one with `pkv token mint`");
    return 2;
  }
  // The token is the password; any username (or none) will do.
  const options = { password: token, maxRetriesPerRequest: 1, retryStrategy: () => null };
  const r = new Redis(url, options);
  const sub = new Redis(url, options);
  try {
    const before = await balance(r);
    console.log(`account ${before.account}: balance ${before.balance}`);

    // Pub/Sub: bob's client listens for new mail on a connection of its own.
    const notices = [];
    const heard = new Promise((resolve) => {
      sub.on("message", (channel, message) => {
        notices.push(message);
        resolve();
      });
    });
    const subscribed = await sub.subscribe("notify:bob");
    check("subscribed to notify:bob", subscribed === 1);

    await r.del("mailbox:bob:messages", "mailbox:bob:unread", "cache:inbox:bob");
    const message = JSON.stringify({ from: "alice", text: "the slides are in", at: Date.now() });
    const delivered = await r
      .pipeline()
      .rpush("mailbox:bob:messages", message)
      .incr("mailbox:bob:unread")
      .publish("notify:bob", "alice")
      .exec();
    const [[, pushed], [, unread], [, receivers]] = delivered;
    check("a message is delivered and counted", pushed === 1 && unread === 1);
    check("bob's listener was reached", receivers === 1);
    await Promise.race([heard, new Promise((resolve) => setTimeout(resolve, 5000))]);
    check(`notice says who wrote: ${notices[0]}`, notices[0] === "alice");

    await r.set("cache:inbox:bob", await r.lindex("mailbox:bob:messages", 0), "EX", 60);
    const ttl = await r.ttl("cache:inbox:bob");
    check(`cache entry expires (TTL ${ttl} s)`, ttl > 0 && ttl <= 60);
    check("cache entry reads back", (await r.get("cache:inbox:bob")) === message);

    const me = crypto.randomUUID();
    const other = crypto.randomUUID();
    const lock = "lock:mailbox:bob";
    check("lock taken", (await r.set(lock, me, "PX", 5000, "NX")) === "OK");
    check("a second holder is refused", (await r.set(lock, other, "PX", 5000, "NX")) === null);
    check("someone else cannot release it", !(await release(r, lock, other)));
    check("the holder releases it", await release(r, lock, me));

    const first = await r.incr("stats:deliveries");
    await r.incr("stats:deliveries");
    check("counter counts", (await r.incr("stats:deliveries")) - first === 2);

    const after = await balance(r);
    const spent = Number(after.spent) - Number(before.spent);
    console.log(
      `account ${after.account}: balance ${after.balance} ` +
        `(this run spent ${spent.toFixed(9)}, ${after.ops} commands so far)`,
    );
    check("the run was paid for", spent > 0 && Number(after.balance) < Number(before.balance));
    return 0;
  } finally {
    sub.disconnect();
    r.disconnect();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`FAIL ${e.message}`);
    process.exit(1);
  },
);
