/**
 * `adainfer batch submit`: records the job in Redis (JobStore), writes the error record of every line that is bad
 * input, and queues the other requests as shards on the model's queue. `resume` queues again every request that
 * has no record and is not in a shard still waiting or running — after a Redis restart that lost everything, that
 * is the whole input; after failed shards, their requests.
 */
import { createHash } from 'crypto';
import { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { AdaInferError } from '../errors';
import { invalidRequestRecord } from '../batch/records';
import type { BatchRequest } from '../batch/requests';
import { JobMeta, JobStore } from './store';
import { queueName, SHARD_ATTEMPTS, SHARD_BACKOFF_MS, ShardData, shardId, ShardOptions } from './shards';

export interface SubmitOptions {
  name: string;
  model: { fingerprint: string; name: string };
  requests: BatchRequest[];
  options: ShardOptions;
  shardSize: number;
  resume: boolean;
  attempts?: number;
  url: string;
}

export interface SubmitReport {
  queue: string;
  total: number;
  /** Lines that are bad input, stored as error records now. */
  invalid: number;
  /** Requests with a record already (resume). */
  alreadyDone: number;
  /** Requests in shards still waiting or running (resume: left to them). */
  inFlight: number;
  queued: number;
  shards: number;
  generation: number;
  /** resume found the job gone (Redis lost it) and made it again. */
  recreated: boolean;
}

const LIVE_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

export async function submitJob(redis: IORedis, o: SubmitOptions): Promise<SubmitReport> {
  const store = new JobStore(redis, o.name);
  const keys = o.requests.map((r) => r.key);
  const inputHash = createHash('sha256').update(keys.join('\n')).digest('hex');
  const queue = queueName(o.model.fingerprint);
  let meta = await store.meta();
  let recreated = false;
  if (meta && !o.resume)
    throw new AdaInferError('QUEUE_JOB', `job '${o.name}' already exists (submitted ${new Date(meta.submittedAt).toISOString()}); pass --resume to queue again what has no result, or choose another --job`);
  if (!meta && o.resume) recreated = true;
  if (meta) {
    if (meta.fingerprint !== o.model.fingerprint)
      throw new AdaInferError('QUEUE_JOB', `job '${o.name}' was submitted for model ${meta.fingerprint}, not ${o.model.fingerprint}`);
    if (meta.inputHash !== inputHash) throw new AdaInferError('QUEUE_JOB', `job '${o.name}' was submitted with other input lines than --in has now`);
  } else {
    meta = {
      name: o.name,
      fingerprint: o.model.fingerprint,
      modelName: o.model.name,
      queue,
      total: o.requests.length,
      inputHash,
      submittedAt: Date.now(),
      generation: 0,
      shardSize: o.shardSize,
      options: JSON.stringify(o.options),
    };
    if (!(await store.create(meta, keys))) throw new AdaInferError('QUEUE_JOB', `job '${o.name}' was created by another submitter meanwhile`);
  }
  const q = new Queue(queue, { connection: redis });
  try {
    // What is already done, or still in the hands of a live shard, is not queued again.
    const present = await store.present(keys);
    const covered = new Set<string>();
    const liveIds: string[] = [];
    for (const id of await store.shardIds()) {
      const state = await q.getJobState(id);
      if (!LIVE_STATES.has(state)) continue;
      liveIds.push(id);
      const job = await q.getJob(id);
      for (const r of (job?.data as ShardData | undefined)?.requests ?? []) covered.add(r.key);
    }
    let invalid = 0;
    const todo: BatchRequest[] = [];
    let inFlight = 0;
    o.requests.forEach((r, i) => {
      if (present[i]) return;
      if (covered.has(r.key)) inFlight++;
      else if (r.invalid) invalid++;
      else todo.push(r);
    });
    for (const r of o.requests.filter((r, i) => r.invalid && !present[i])) {
      const outcome = await store.put(r.key, invalidRequestRecord(r, r.invalid!.message, r.invalid!.param));
      if (outcome === 'job-lost') throw new AdaInferError('QUEUE_JOB', `job '${o.name}' vanished from Redis while it was being submitted`);
    }
    const generation = meta.generation + 1;
    const shards: ShardData[] = [];
    for (let i = 0; i < todo.length; i += o.shardSize)
      shards.push({ job: o.name, fingerprint: o.model.fingerprint, generation, shard: shards.length, options: o.options, requests: todo.slice(i, i + o.shardSize) });
    const ids = shards.map((s) => shardId(o.name, generation, s.shard));
    // The shard list first (the live shards of earlier submissions stay on it): a status that reads it meanwhile
    // sees the shards not yet added as 'unknown'.
    await store.setGeneration(generation, [...liveIds, ...ids]);
    for (let i = 0; i < shards.length; i += 500) {
      await q.addBulk(
        shards.slice(i, i + 500).map((s, j) => ({
          name: o.name,
          data: s,
          opts: {
            jobId: ids[i + j],
            attempts: o.attempts ?? SHARD_ATTEMPTS,
            backoff: { type: 'exponential', delay: SHARD_BACKOFF_MS },
            removeOnComplete: { age: 7 * 24 * 3600 },
            removeOnFail: { age: 7 * 24 * 3600 },
          },
        })),
      );
    }
    return {
      queue,
      total: o.requests.length,
      invalid,
      alreadyDone: present.filter(Boolean).length,
      inFlight,
      queued: todo.length,
      shards: shards.length,
      generation,
      recreated,
    };
  } finally {
    await q.close();
  }
}

export type { JobMeta };
