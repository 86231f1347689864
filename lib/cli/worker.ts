/**
 * `adainfer worker --queue URL [-m MODEL] [--backend auto|cpu|cuda] [--threads T] [--stall-interval MS]`: loads the
 * model and processes the shards queued for its fingerprint until SIGTERM or SIGINT (lib/queue/worker.ts).
 */
import { Command } from 'commander';
import type IORedis from 'ioredis';
import { loadModel } from '../api';
import { queueOption } from './batch_queue';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';

interface WorkerFlags extends BackendFlags {
  queue: string;
  model: string;
  threads?: number;
  stallInterval: number;
}

export function registerWorker(program: Command): void {
  addBackendOptions(program.command('worker'))
    .description("process the batch shards queued for the loaded model (`adainfer batch submit`), on this machine, until SIGTERM")
    .addOption(queueOption())
    .addOption(modelOption())
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option(
      '--stall-interval <ms>',
      "a shard whose worker has not renewed its lock for this long (killed, frozen) goes back to wait; the lock is renewed every half of it",
      intOption('--stall-interval', 500, 3_600_000),
      30_000,
    )
    .action(async (flags: WorkerFlags) => {
      const { BatchWorker, connectForWorker, displayUrl } = await import('../queue');
      const log = (line: string) => process.stderr.write(`worker ${process.pid}: ${line}\n`);
      const model = await loadModel(flags.model, { threads: flags.threads, backend: flags.backend, device: flags.device });
      const where = displayUrl(flags.queue);
      let lastError = '';
      const onRedisError = (e: Error) => {
        // ioredis repeats a refused connection on every retry: say it once per change.
        if (e.message !== lastError) log(`Redis at ${where}: ${e.message} (retrying)`);
        lastError = e.message;
      };
      const redis = connectForWorker(flags.queue, onRedisError);
      const connection = connectForWorker(flags.queue, onRedisError);
      watchRestarts(redis, where, log);
      const worker = new BatchWorker({ model, redis, connection, stallIntervalMs: flags.stallInterval, log });
      await worker.ready();
      log(`ready: model ${model.info.name} (${model.info.fingerprint}) on ${model.info.backend}, queue ${worker.queue} at ${displayUrl(flags.queue)}`);
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          log(`${signal}: finishing the current step, handing the shard back`);
          worker.stop().then(resolve, (e: Error) => {
            log(`stopping: ${e.message}`);
            resolve();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      await model.dispose();
      redis.disconnect();
      connection.disconnect();
      log(`stopped after ${worker.reports.length} shard(s)`);
    });
}

/**
 * Says when the connection drops and when the Redis it comes back to is another run of the server (its run_id
 * changed): a Redis restarted without persistence has lost every job and result, which the worker cannot repair.
 */
function watchRestarts(redis: IORedis, where: string, log: (line: string) => void): void {
  let runId: string | undefined;
  let lost = false;
  redis.on('close', () => {
    if (!lost && runId !== undefined) log(`lost the connection to Redis at ${where}; reconnecting`);
    lost = true;
  });
  redis.on('ready', () => {
    redis.info('server').then(
      (info) => {
        const id = /run_id:(\w+)/.exec(info)?.[1];
        if (runId !== undefined && id !== runId)
          log(
            `Redis at ${where} restarted (a new run_id): the jobs queued before are lost unless it persisted them; ` +
              `'adainfer batch status NAME' says whether a job is still there, 'adainfer batch submit --resume' queues it again`,
          );
        else if (lost && runId !== undefined) log(`reconnected to Redis at ${where}`);
        runId = id;
        lost = false;
      },
      () => undefined,
    );
  });
}
