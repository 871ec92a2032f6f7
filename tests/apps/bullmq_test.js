// BullMQ through pkv: a Queue and a Worker process an immediate job, a delayed job (1 s)
// and a job that fails once and succeeds on its retry (`attempts: 2`); the caller also
// waits for the first through QueueEvents (a blocking XREAD on the queue's event stream).
// Exits 0 only if all three complete as BullMQ says they should.
//
// Usage: PKV_APP_URL=redis://:<token>@host:port bullmq_test.js
'use strict';
const { Queue, QueueEvents, Worker } = require('bullmq');

const url = new URL(process.env.PKV_APP_URL);
const connection = {
  host: url.hostname,
  port: Number(url.port),
  password: decodeURIComponent(url.password),
  // BullMQ's workers block on the connection and want no per-request retry limit.
  maxRetriesPerRequest: null,
};

function fail(why) {
  console.log(`FAIL ${why}`);
  process.exit(1);
}

async function main() {
  const queue = new Queue('apps', { connection });
  const events = new QueueEvents('apps', { connection });
  await events.waitUntilReady();
  const seen = new Map();
  let worker;
  const done = new Promise((resolve, reject) => {
    worker = new Worker(
      'apps',
      async (job) => {
        if (job.name === 'flaky' && job.attemptsMade === 0) {
          throw new Error('the first attempt fails');
        }
        return job.data.x + job.data.y;
      },
      { connection },
    );
    worker.on('completed', (job) => {
      seen.set(job.name, job);
      if (seen.size === 3) resolve();
    });
    worker.on('error', reject);
  });
  await worker.waitUntilReady();

  const added = Date.now();
  const now = await queue.add('now', { x: 2, y: 3 });
  const delayed = await queue.add('delayed', { x: 20, y: 22 }, { delay: 1000 });
  const flaky = await queue.add('flaky', { x: 1, y: 1 }, { attempts: 2 });
  if ((await delayed.getState()) !== 'delayed') fail('the delayed job is not in the delayed set');
  const waited = await now.waitUntilFinished(events, 10000);
  if (waited !== 5) fail(`waitUntilFinished gave ${JSON.stringify(waited)}, not 5`);
  console.log('ok   QueueEvents: waitUntilFinished gave 5');

  const timer = setTimeout(() => fail(`only ${[...seen.keys()]} completed within 30 s`), 30000);
  await done;
  clearTimeout(timer);

  const check = async (job, value) => {
    const fresh = await queue.getJob(job.id);
    const state = await fresh.getState();
    if (state !== 'completed' || fresh.returnvalue !== value) {
      fail(`${job.name}: ${state} with ${JSON.stringify(fresh.returnvalue)}, not ${value}`);
    }
    return fresh;
  };
  await check(now, 5);
  console.log('ok   an immediate job completed with 5');
  const d = await check(delayed, 42);
  if (d.processedOn - added < 1000) fail(`the delayed job ran ${d.processedOn - added} ms after it was added`);
  console.log(`ok   a job delayed 1 s ran ${d.processedOn - added} ms after it was added`);
  const f = await check(flaky, 2);
  if (f.attemptsMade !== 2) fail(`the flaky job completed after ${f.attemptsMade} attempts, not 2`);
  console.log('ok   a job that failed once completed on its second attempt');

  const counts = await queue.getJobCounts('completed', 'failed', 'waiting', 'delayed');
  if (counts.completed !== 3 || counts.failed + counts.waiting + counts.delayed !== 0) {
    fail(`job counts ${JSON.stringify(counts)}`);
  }
  console.log(`ok   job counts ${JSON.stringify(counts)}`);
  await worker.close();
  await events.close();
  await queue.close();
}

const overall = setTimeout(() => fail('the test did not finish within 60 s'), 60000);
main().then(
  () => clearTimeout(overall),
  (e) => fail(e && e.stack ? e.stack : String(e)),
);
