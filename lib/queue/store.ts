/**
 * A batch job's state in Redis, beside BullMQ's own keys (which hold only the shards):
 *
 *   adainfer:batch:{NAME}:meta     hash: model fingerprint, queue, options, input hash, totals, shard ids list key
 *   adainfer:batch:{NAME}:ids      list: every request's key (idKey of its custom_id / id), in input order
 *   adainfer:batch:{NAME}:results  hash: request key -> its output record (JSON), written once (HSETNX)
 *   adainfer:batch:{NAME}:done     sorted set: completed request key -> when its record was stored (ms; throughput, ETA)
 *   adainfer:batch:{NAME}:errors   set: the keys whose record is an error record
 *   adainfer:batch:{NAME}:shards   list: the BullMQ job ids of the shards of the latest submission
 *
 * A record is stored by one Lua script — if the job's meta exists, HSETNX the record and, only when that wrote
 * it, note the time of a completion (or the key of an error record) — so at-least-once processing stores each request's record exactly once,
 * whichever worker finishes it first, and a write into a Redis that lost the job (a restart without persistence)
 * is refused instead of making a job without its meta.
 */
import type IORedis from 'ioredis';
import { AdaInferError, OptionError } from '../errors';
import type { OutputRecord } from '../batch/records';
import { isErrorRecord } from '../batch/records';
import { displayUrl } from './connection';

/** Job names: what may stand in a BullMQ job id and a Redis key without quoting. */
export const JOB_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

export interface JobMeta {
  name: string;
  fingerprint: string;
  modelName: string;
  queue: string;
  total: number;
  /** sha256 over the input's request keys in order: a resubmission must bring the same input. */
  inputHash: string;
  submittedAt: number;
  /** Submissions so far (1 + resumes): shard ids carry it, so a resumed shard is a new BullMQ job. */
  generation: number;
  shardSize: number;
  /** JSON of the job's options (ShardOptions). */
  options: string;
}

const STORE_RECORD = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[4] == '1' then redis.call('SADD', KEYS[4], ARGV[1]) else redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
return 1`;

/** The outcome of storing a record: stored, already there (another worker's identical run), or the job is gone. */
export type StoreOutcome = 'stored' | 'present' | 'job-lost';

export class JobStore {
  readonly keys: { meta: string; ids: string; results: string; done: string; errors: string; shards: string };

  constructor(
    readonly redis: IORedis,
    readonly name: string,
  ) {
    checkJobName(name);
    const base = `adainfer:batch:{${name}}`;
    this.keys = { meta: `${base}:meta`, ids: `${base}:ids`, results: `${base}:results`, done: `${base}:done`, errors: `${base}:errors`, shards: `${base}:shards` };
  }

  async meta(): Promise<JobMeta | undefined> {
    const h = await this.redis.hgetall(this.keys.meta);
    if (!h || Object.keys(h).length === 0) return undefined;
    return {
      name: h.name,
      fingerprint: h.fingerprint,
      modelName: h.modelName,
      queue: h.queue,
      total: Number(h.total),
      inputHash: h.inputHash,
      submittedAt: Number(h.submittedAt),
      generation: Number(h.generation),
      shardSize: Number(h.shardSize),
      options: h.options,
    };
  }

  /** The meta, or QUEUE_JOB saying that the job is not there and what may have happened. */
  async requireMeta(url: string): Promise<JobMeta> {
    const meta = await this.meta();
    if (!meta) throw jobMissing(this.name, url);
    return meta;
  }

  /** Creates the job; false when a job of that name already exists (nothing is written then). */
  async create(meta: JobMeta, keys: string[]): Promise<boolean> {
    const fields = Object.entries(meta).flatMap(([k, v]) => [k, String(v)]);
    // The name field first, with HSETNX: of two submitters racing for one name, one creates it.
    if ((await this.redis.hsetnx(this.keys.meta, 'name', meta.name)) === 0) return false;
    await this.redis.hset(this.keys.meta, ...fields);
    await this.redis.del(this.keys.ids);
    for (let i = 0; i < keys.length; i += 1000) await this.redis.rpush(this.keys.ids, ...keys.slice(i, i + 1000));
    return true;
  }

  async setGeneration(generation: number, shardIds: string[]): Promise<void> {
    await this.redis.hset(this.keys.meta, 'generation', String(generation));
    await this.redis.del(this.keys.shards);
    for (let i = 0; i < shardIds.length; i += 1000) await this.redis.rpush(this.keys.shards, ...shardIds.slice(i, i + 1000));
  }

  async shardIds(): Promise<string[]> {
    return this.redis.lrange(this.keys.shards, 0, -1);
  }

  async put(key: string, record: OutputRecord): Promise<StoreOutcome> {
    const r = (await this.redis.eval(
      STORE_RECORD,
      4,
      this.keys.meta,
      this.keys.results,
      this.keys.done,
      this.keys.errors,
      key,
      JSON.stringify(record),
      String(Date.now()),
      isErrorRecord(record) ? '1' : '0',
    )) as number;
    return r === 1 ? 'stored' : r === 0 ? 'present' : 'job-lost';
  }

  /** Which of `keys` have a record. */
  async present(keys: string[]): Promise<boolean[]> {
    const out: boolean[] = [];
    for (let i = 0; i < keys.length; i += 1000) {
      const chunk = keys.slice(i, i + 1000);
      if (chunk.length === 0) break;
      const pipeline = this.redis.pipeline();
      for (const k of chunk) pipeline.hexists(this.keys.results, k);
      const res = (await pipeline.exec()) ?? [];
      for (const [err, v] of res) {
        if (err) throw err;
        out.push(v === 1);
      }
    }
    return out;
  }

  /** The stored records of `keys` (JSON text, undefined where none), in order. */
  async records(keys: string[]): Promise<(string | undefined)[]> {
    if (keys.length === 0) return [];
    const r = await this.redis.hmget(this.keys.results, ...keys);
    return r.map((v) => v ?? undefined);
  }

  async idsRange(start: number, stop: number): Promise<string[]> {
    return this.redis.lrange(this.keys.ids, start, stop);
  }

  async counts(): Promise<{ stored: number; errors: number }> {
    const [stored, errors] = await Promise.all([this.redis.hlen(this.keys.results), this.redis.scard(this.keys.errors)]);
    return { stored, errors };
  }

  /** Records stored since `sinceMs`, and the first and last store times (ms; undefined when none). */
  async timeline(sinceMs: number): Promise<{ recent: number; first?: number; last?: number }> {
    const [recent, first, last] = await Promise.all([
      this.redis.zcount(this.keys.done, sinceMs, '+inf'),
      this.redis.zrange(this.keys.done, 0, 0, 'WITHSCORES'),
      this.redis.zrange(this.keys.done, -1, -1, 'WITHSCORES'),
    ]);
    return { recent, first: first.length === 2 ? Number(first[1]) : undefined, last: last.length === 2 ? Number(last[1]) : undefined };
  }
}

export function checkJobName(name: string, option = '--job'): void {
  if (!JOB_NAME.test(name))
    throw new OptionError(option, `'${name}': use 1 to 100 of the characters A-Z a-z 0-9 _ . -`);
}

export function jobMissing(name: string, url: string): AdaInferError {
  return new AdaInferError(
    'QUEUE_JOB',
    `job '${name}' is not in Redis at ${displayUrl(url)}: it was never submitted there, or Redis lost its data ` +
      `(a restart without persistence); 'adainfer batch submit --resume --job ${name} --in FILE' queues again every request that has no result`,
  );
}
