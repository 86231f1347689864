/**
 * `adainfer worker`: a BullMQ worker on the queue of the model it has loaded (queueName(fingerprint)), one shard at
 * a time. A shard:
 *
 * 1. skips the requests that already have a record (a shard taken over from a killed worker, a retry);
 * 2. stores an error record (400) for each request that cannot run on this model (no tokens, longer than the
 *    context, a token id beyond the vocabulary) — bad input is never retried;
 * 3. generates the rest (lib/batch/run.ts), storing each record as soon as its request finishes (JobStore.put:
 *    once per request, whoever finishes it first; each request's seed comes from its line, so a re-run writes the
 *    same text).
 *
 * Anything else that fails the shard (Redis unreachable mid-shard, a native error) fails the attempt: BullMQ retries
 * it with exponential backoff, and the last attempt first stores an error record for each request still without one,
 * so `collect` can finish. A store refused because the job's meta is gone (Redis restarted without persistence) ends
 * the shard at once with a message saying so; `batch submit --resume` queues it again.
 *
 * `stop()` (SIGTERM): the running generateBatch stops after its current step, the records of the requests that
 * finished are stored, the shard goes back to wait for another worker, and the worker closes.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type IORedis from 'ioredis';
import type { Model } from '../api';
import { completionRecord, failedRequestRecord, invalidRequestRecord, OutputRecord, RecordModel } from '../batch/records';
import type { BatchRequest } from '../batch/requests';
import { BatchJobOptions, generateRequests, tokenizeRequests } from '../batch/run';
import { JobStore, StoreOutcome } from './store';
import { queueName, ShardData, ShardOptions } from './shards';

export interface WorkerOptions {
  model: Model;
  /** Commands for the results (a connection of its own, beside BullMQ's). */
  redis: IORedis;
  /** BullMQ's connection. */
  connection: IORedis;
  /** ms without a lock renewal after which a shard counts as stalled and goes back to wait (BullMQ lockDuration and stalledInterval). */
  stallIntervalMs: number;
  log: (line: string) => void;
}

export interface ShardReport {
  job: string;
  shard: string;
  skipped: number;
  rejected: number;
  stored: number;
  ms: number;
}

export class BatchWorker {
  private readonly worker: Worker<ShardData>;
  private readonly recordModel: RecordModel;
  private stopping = false;
  private current: AbortController | undefined;
  readonly reports: ShardReport[] = [];

  constructor(private readonly o: WorkerOptions) {
    const info = o.model.info;
    this.recordModel = { name: info.name, fingerprint: info.fingerprint, nLayer: info.nLayer };
    this.worker = new Worker<ShardData>(queueName(info.fingerprint), (job, token) => this.process(job, token), {
      connection: o.connection,
      concurrency: 1,
      lockDuration: o.stallIntervalMs,
      stalledInterval: o.stallIntervalMs,
      // A shard whose worker was killed stalls once per kill; it fails (and its requests get error records
      // on --resume) only after this many.
      maxStalledCount: 5,
    });
    this.worker.on('error', (e) => o.log(`worker: ${e.message}`));
    this.worker.on('failed', (job, e) => {
      if (job && e.name !== 'WaitingError') o.log(`worker: shard ${job.id} failed (attempt ${job.attemptsMade}): ${e.message}`);
    });
  }

  get queue(): string {
    return this.worker.name;
  }

  /** Resolves once the worker is connected and polling. */
  async ready(): Promise<void> {
    await this.worker.waitUntilReady();
  }

  /** SIGTERM: finish the current step, hand the shard back, close. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.current?.abort(new Error('worker stopping'));
    await this.worker.close();
  }

  private async process(job: Job<ShardData>, token: string | undefined): Promise<{ stored: number }> {
    const t0 = performance.now();
    const data = job.data;
    const store = new JobStore(this.o.redis, data.job);
    const lost = () =>
      new UnrecoverableError(
        `job '${data.job}' is no longer in Redis (did Redis restart without persistence?); shard ${job.id} is abandoned: ` +
          `'adainfer batch submit --resume --job ${data.job} --in FILE' queues again what has no result`,
      );
    if (data.fingerprint !== this.recordModel.fingerprint) throw new UnrecoverableError(`shard ${job.id} is for model ${data.fingerprint}`);
    if (!(await store.meta())) throw lost();
    this.o.log(`shard ${job.id} started (${data.requests.length} requests, attempt ${job.attemptsMade + 1})`);

    const present = await store.present(data.requests.map((r) => r.key));
    const todo = data.requests.filter((_, i) => !present[i]);
    const report: ShardReport = { job: data.job, shard: String(job.id), skipped: data.requests.length - todo.length, rejected: 0, stored: 0, ms: 0 };
    let jobLost = false;
    const pending: Promise<void>[] = [];
    const abort = new AbortController();
    const put = (request: BatchRequest, record: OutputRecord): Promise<void> =>
      store.put(request.key, record).then((outcome: StoreOutcome) => {
        if (outcome === 'job-lost') {
          jobLost = true;
          abort.abort(new Error('job lost'));
        } else if (outcome === 'stored') report.stored++;
      });

    this.current = abort;
    try {
      if (this.stopping) throw new Error('worker stopping');
      const options = this.jobOptions(data.options);
      const { ready, rejected } = await tokenizeRequests(this.o.model, todo, options.contextSize ?? this.o.model.info.contextLength, options.chatTemplate);
      report.rejected = rejected.length;
      for (const r of rejected) pending.push(put(r.request, invalidRequestRecord(r.request, r.message, r.request.kind === 'chat' ? 'messages' : 'prompt')));
      await generateRequests(
        this.o.model,
        ready,
        options,
        (request, result, seed) => pending.push(put(request, completionRecord(request, result, this.recordModel, seed))),
        abort.signal,
      );
      await Promise.all(pending);
      if (jobLost) throw lost();
    } catch (e) {
      await Promise.allSettled(pending);
      if (jobLost) throw lost();
      if (this.stopping) {
        // Hand the shard back: the requests without a record run on another worker.
        this.o.log(`shard ${job.id} handed back (${report.stored} records stored)`);
        await job.moveToWait(token);
        throw new WaitingError();
      }
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
        const message = `shard ${job.id} failed ${job.attemptsMade + 1} time(s); last: ${(e as Error).message}`;
        const still = await store.present(todo.map((r) => r.key));
        await Promise.all(todo.filter((_, i) => !still[i]).map((r) => put(r, failedRequestRecord(r, 'shard_failed', message))));
      }
      throw e;
    } finally {
      this.current = undefined;
    }
    report.ms = performance.now() - t0;
    this.reports.push(report);
    this.o.log(`shard ${job.id} done (${report.stored} stored, ${report.skipped} already there, ${report.rejected} rejected, ${report.ms.toFixed(0)} ms)`);
    return { stored: report.stored };
  }

  /** The shard's options with its exit file written to a temporary file (named by its content's hash). */
  private jobOptions(o: ShardOptions): BatchJobOptions {
    const { exitFile, ...rest } = o;
    if (exitFile === undefined) return { ...rest, exit: 'never' };
    const text = JSON.stringify(exitFile);
    const file = path.join(os.tmpdir(), `adainfer-exit-${createHash('sha256').update(text).digest('hex').slice(0, 32)}.json`);
    if (!fs.existsSync(file)) {
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, file);
    }
    return { ...rest, exit: file };
  }
}
