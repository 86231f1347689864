/**
 * Connections to the Redis behind the batch queue (`--queue redis://HOST:PORT[/DB]`), through ioredis (what
 * BullMQ drives). Two kinds: a command's (submit, status, collect), which fails fast with QUEUE_UNREACHABLE when
 * Redis does not answer, and a worker's, which keeps reconnecting (a Redis restart must not end a worker).
 */
import IORedis, { RedisOptions } from 'ioredis';
import { AdaInferError, OptionError } from '../errors';

/** Checks a --queue URL: redis:// or rediss://, with a host. */
export function checkQueueUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new OptionError('--queue', `expected redis://HOST:PORT, got '${url}'`);
  }
  if ((parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') || parsed.hostname === '')
    throw new OptionError('--queue', `expected redis://HOST:PORT (or rediss://), got '${url}'`);
  return url;
}

/** The URL without a password, for messages. */
export function displayUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

/** A command's connection: a few quick retries, then QUEUE_UNREACHABLE (thrown by `ping`). */
export async function connectForCommand(url: string): Promise<IORedis> {
  const options: RedisOptions = {
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 2,
    retryStrategy: (times) => (times > 3 ? null : 200 * times),
  };
  const redis = new IORedis(checkQueueUrl(url), options);
  // The socket's own error (ECONNREFUSED, a DNS failure) says more than the "Connection is closed" that follows.
  let socketError: Error | undefined;
  redis.on('error', (e: Error) => (socketError ??= e));
  try {
    await redis.connect();
    await redis.ping();
  } catch (e) {
    redis.disconnect();
    throw unreachable(url, socketError ?? e);
  }
  return redis;
}

/** A worker's connection: reconnects for ever (BullMQ needs maxRetriesPerRequest null on it). */
export function connectForWorker(url: string, onError: (e: Error) => void): IORedis {
  const redis = new IORedis(checkQueueUrl(url), {
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(200 * times, 2000),
  });
  redis.on('error', onError);
  return redis;
}

export function unreachable(url: string, cause: unknown): AdaInferError {
  return new AdaInferError('QUEUE_UNREACHABLE', `cannot reach Redis at ${displayUrl(url)}: ${(cause as Error).message ?? String(cause)}`);
}
