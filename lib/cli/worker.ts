/**
 * `adainfer worker --queue URL [-m MODEL] [--backend auto|cpu|cuda] [--threads T] [--stall-interval MS]`: loads the
 * model and processes the shards queued for its fingerprint until SIGTERM or SIGINT (lib/queue/worker.ts).
 */
import { Command } from 'commander';
import { loadModel } from '../api';
import { connectForWorker, displayUrl } from '../queue/connection';
import { BatchWorker } from '../queue/worker';
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
      const log = (line: string) => process.stderr.write(`worker ${process.pid}: ${line}\n`);
      const model = await loadModel(flags.model, { threads: flags.threads, backend: flags.backend, device: flags.device });
      let lastError = '';
      const onRedisError = (e: Error) => {
        // ioredis repeats a refused connection on every retry: say it once per change.
        if (e.message !== lastError) log(`Redis at ${displayUrl(flags.queue)}: ${e.message} (retrying)`);
        lastError = e.message;
      };
      const redis = connectForWorker(flags.queue, onRedisError);
      const connection = connectForWorker(flags.queue, onRedisError);
      redis.on('ready', () => (lastError = ''));
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
