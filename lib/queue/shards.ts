/**
 * Shards on BullMQ: one queue per model fingerprint (`adainfer.model.<sha256 hex>`), so a worker that has loaded a
 * model consumes exactly the shards made for that model and never sees another model's; a shard is one BullMQ job
 * holding a slice of the input's requests and the job's options (exit file included, so a worker needs nothing
 * but the model). BullMQ gives the rest: at-least-once delivery, a lock per active shard renewed while the worker
 * lives, stalled-shard detection (a shard whose worker stopped renewing goes back to wait after the stall
 * interval), and retries with exponential backoff.
 */
import type { BatchJobOptions } from '../batch/run';
import type { BatchRequest } from '../batch/requests';

/** The queue of a model's shards. */
export function queueName(fingerprint: string): string {
  return `adainfer.model.${fingerprint.replace(/^sha256:/, '')}`;
}

/** The options a shard runs with: the job's, with an exit file's content in place of its path. */
export interface ShardOptions extends Omit<BatchJobOptions, 'exit'> {
  /** The exit file's JSON (checked at submit against the model), or undefined: full depth. */
  exitFile?: unknown;
}

export interface ShardData {
  job: string;
  fingerprint: string;
  generation: number;
  shard: number;
  options: ShardOptions;
  requests: BatchRequest[];
}

/** The BullMQ job id of a shard: a resumed submission (a new generation) makes new jobs, never a no-op re-add. */
export function shardId(job: string, generation: number, shard: number): string {
  return `${job}.g${generation}.s${shard}`;
}

/** Retry policy of a shard: transient failures (anything but bad input, which is an error record) retry with backoff. */
export const SHARD_ATTEMPTS = 5;
export const SHARD_BACKOFF_MS = 1000;
