// BullMQ's addBulk through pkv: it queues one EVALSHA per job inside one MULTI, which pkv
// runs at EXEC with the transaction; then a worker takes the five jobs to completed.
//
// Usage: node bullmq_add_bulk.mjs <host> <port> <token> (with `bullmq` installed where
// node resolves it); prints the job ids, the sum of the results (150) and the job counts,
// and exits non-zero if a job fails or 20 s pass.
import { Queue, Worker } from 'bullmq';

const [host, port, token] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const connection = { host, port, password: token, maxRetriesPerRequest: null };
const queue = new Queue('bulk', { connection });
const jobs = await queue.addBulk([1, 2, 3, 4, 5].map(n => ({ name: 'n', data: { n } })));
console.log('added', jobs.map(j => j.id).join(','));
let sum = 0;
let done = 0;
await new Promise((resolve, reject) => {
  const worker = new Worker('bulk', async job => job.data.n * 10, { connection });
  worker.on('completed', (job, result) => {
    sum += result;
    done += 1;
    if (done === 5) worker.close().then(resolve);
  });
  worker.on('failed', (job, err) => reject(err));
  setTimeout(() => reject(new Error(`timeout; ${done} done`)), 20000);
});
console.log('sum', sum, 'counts', JSON.stringify(await queue.getJobCounts()));
await queue.close();
