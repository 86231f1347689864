/**
 * `adainfer batch status` and `collect`: read a job's records and its shards' states from Redis.
 */
import * as fs from 'fs';
import { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { AdaInferError } from '../errors';
import { isErrorRecord, OutputRecord } from '../batch/records';
import { JobStore } from './store';

/** Throughput is measured over the records stored in the last minute (or since the first one, when sooner). */
const RATE_WINDOW_MS = 60_000;

export interface JobStatus {
  job: string;
  model: { name: string; fingerprint: string };
  queue: string;
  total: number;
  /** Requests with a completion record. */
  succeeded: number;
  /** Requests with an error record (bad input, or a shard that failed every attempt). */
  failed: number;
  remaining: number;
  complete: boolean;
  /** States of the latest submission's shards (and of the earlier ones still live). */
  shards: Record<string, number>;
  submittedAt: string;
  firstRecordAt: string | null;
  lastRecordAt: string | null;
  /** Records per second over the last minute (over the whole job once it is complete). */
  requestsPerSecond: number | null;
  /** Seconds until every request has a record at that rate (null: no rate yet). */
  etaSeconds: number | null;
}

export async function jobStatus(redis: IORedis, name: string, url: string): Promise<JobStatus> {
  const store = new JobStore(redis, name);
  const meta = await store.requireMeta(url);
  const now = Date.now();
  const [{ stored, errors }, timeline, shardIds] = await Promise.all([store.counts(), store.timeline(now - RATE_WINDOW_MS), store.shardIds()]);
  const shards: Record<string, number> = {};
  const q = new Queue(meta.queue, { connection: redis });
  try {
    const states = await Promise.all(shardIds.map((id) => q.getJobState(id)));
    for (const s of states) shards[s] = (shards[s] ?? 0) + 1;
  } finally {
    await q.close();
  }
  const remaining = Math.max(0, meta.total - stored);
  const complete = remaining === 0;
  let rate: number | null = null;
  if (timeline.first !== undefined && timeline.last !== undefined) {
    if (complete) rate = timeline.last > timeline.first ? stored / ((timeline.last - timeline.first) / 1000) : null;
    else rate = timeline.recent / (Math.min(RATE_WINDOW_MS, Math.max(1000, now - timeline.first)) / 1000);
  }
  return {
    job: name,
    model: { name: meta.modelName, fingerprint: meta.fingerprint },
    queue: meta.queue,
    total: meta.total,
    succeeded: stored - errors,
    failed: errors,
    remaining,
    complete,
    shards,
    submittedAt: new Date(meta.submittedAt).toISOString(),
    firstRecordAt: timeline.first !== undefined ? new Date(timeline.first).toISOString() : null,
    lastRecordAt: timeline.last !== undefined ? new Date(timeline.last).toISOString() : null,
    requestsPerSecond: rate,
    etaSeconds: complete ? 0 : rate && rate > 0 ? remaining / rate : null,
  };
}

export interface CollectReport {
  written: number;
  errors: number;
  missing: number;
}

/**
 * Writes every stored record to `out`, in input order, each request once (the ids are unique and each has at most
 * one record). Unless `partial`, a job with requests still lacking a record is an error and nothing is written.
 * The file is written beside `out` and renamed over it, so `out` is never half written.
 */
export async function collectJob(redis: IORedis, name: string, url: string, out: string, partial: boolean): Promise<CollectReport> {
  const store = new JobStore(redis, name);
  const meta = await store.requireMeta(url);
  const { stored } = await store.counts();
  if (stored < meta.total && !partial)
    throw new AdaInferError(
      'QUEUE_JOB',
      `job '${name}': ${meta.total - stored} of ${meta.total} requests have no result yet ('adainfer batch status ${name}'); --partial writes the ${stored} there are`,
    );
  const tmp = `${out}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  const report: CollectReport = { written: 0, errors: 0, missing: 0 };
  try {
    for (let start = 0; start < meta.total; start += 1000) {
      const keys = await store.idsRange(start, Math.min(meta.total, start + 1000) - 1);
      const records = await store.records(keys);
      let chunk = '';
      for (const r of records) {
        if (r === undefined) {
          report.missing++;
          continue;
        }
        chunk += r + '\n';
        report.written++;
        if (isErrorRecord(JSON.parse(r) as OutputRecord)) report.errors++;
      }
      fs.writeSync(fd, chunk);
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, out);
  return report;
}
