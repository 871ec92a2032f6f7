// Custom script commands through pkv: ioredis `defineCommand` and node-redis
// `defineScript` (both send EVALSHA and fall back to EVAL on NOSCRIPT). Exits 0 only if each
// command's results are right, the first call and the cached one.
//
// Usage: PKV_APP_URL=redis://:<token>@host:port node_scripts_test.js
'use strict';
const Redis = require('ioredis');
const { createClient, defineScript } = require('redis');

const url = process.env.PKV_APP_URL;
let failed = false;
function check(what, got, want) {
  const ok = JSON.stringify(got) === JSON.stringify(want);
  failed ||= !ok;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${JSON.stringify(got)}${ok ? '' : `, not ${JSON.stringify(want)}`}`);
}

// Adds ARGV[1] to the counter KEYS[1] and appends the new value to the list KEYS[2];
// returns the new value and the list's length.
const LUA = `
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local n = redis.call('RPUSH', KEYS[2], v)
return {v, n}
`;

async function ioredis() {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  client.defineCommand('addAndLog', { numberOfKeys: 2, lua: LUA });
  check('ioredis defineCommand, first call', await client.addAndLog('io:counter', 'io:log', 5), [5, 1]);
  check('ioredis defineCommand, cached', await client.addAndLog('io:counter', 'io:log', 2), [7, 2]);
  check('ioredis, the log', await client.lrange('io:log', 0, -1), ['5', '7']);
  await client.quit();
}

async function nodeRedis() {
  const client = createClient({
    url,
    scripts: {
      addAndLog: defineScript({
        SCRIPT: LUA,
        NUMBER_OF_KEYS: 2,
        parseCommand(parser, counter, log, by) {
          parser.pushKey(counter);
          parser.pushKey(log);
          parser.push(String(by));
        },
        transformReply: (reply) => reply,
      }),
    },
  });
  client.on('error', (e) => {
    failed = true;
    console.log(`FAIL node-redis: ${e}`);
  });
  await client.connect();
  check('node-redis defineScript, first call', await client.addAndLog('nr:counter', 'nr:log', 3), [3, 1]);
  check('node-redis defineScript, cached', await client.addAndLog('nr:counter', 'nr:log', 4), [7, 2]);
  check('node-redis, the log', await client.lRange('nr:log', 0, -1), ['3', '7']);
  await client.quit();
}

const overall = setTimeout(() => {
  console.log('FAIL the test did not finish within 30 s');
  process.exit(1);
}, 30000);
(async () => {
  for (const run of [ioredis, nodeRedis]) {
    try {
      await run();
    } catch (e) {
      failed = true;
      console.log(`FAIL ${run.name}: ${e && e.message}`);
    }
  }
  clearTimeout(overall);
  process.exit(failed ? 1 : 0);
})();
