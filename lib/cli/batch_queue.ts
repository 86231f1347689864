/**
 * The multi-machine batch mode, subcommands of `adainfer batch` (the queue's logic is lib/queue/):
 *
 *   batch submit --queue URL --in FILE --job NAME [--shard-size N] [--resume] [job options as `batch`]
 *   batch status NAME --queue URL [--json]
 *   batch collect NAME --queue URL --out FILE [--partial]
 *
 * `--queue` defaults to $ADAINFER_QUEUE. Workers: `adainfer worker` (worker.ts).
 */
import * as fs from 'fs';
import { Command, Option } from 'commander';
import { loadModel } from '../api';
import { readBatchRequests } from '../batch/requests';
import { OptionError } from '../errors';
import type { JobStatus } from '../queue';
import { addJobOptions, checkJobFlags, JobFlags, jobOptions } from './batch_options';
import { resolveExitChoice } from './exit_choice';
import { intOption, modelOption } from './options';
import { checkWritableFile, warnIfBeyondTrainedContext } from './output';
import { progressBar } from './progress';

/** `--queue redis://HOST:PORT`, defaulting to $ADAINFER_QUEUE. */
export function queueOption(): Option {
  const o = new Option('--queue <url>', 'the Redis of the queue: redis://HOST:PORT[/DB] (default: $ADAINFER_QUEUE)');
  return process.env.ADAINFER_QUEUE ? o.default(process.env.ADAINFER_QUEUE) : o.makeOptionMandatory();
}

interface SubmitFlags extends JobFlags {
  queue: string;
  in: string;
  job: string;
  shardSize: number;
  resume?: boolean;
  model: string;
  json?: boolean;
}

export function registerBatchQueue(batch: Command): void {
  addJobOptions(
    batch
      .command('submit')
      .description("split a JSONL input into shards on the queue of the model's fingerprint, for `adainfer worker`s on any machine")
      .addOption(queueOption())
      .requiredOption('--in <file>', 'JSONL input (the lines `adainfer batch` reads)')
      .requiredOption('--job <name>', 'the job\'s name (A-Z a-z 0-9 _ . -), used by status and collect')
      .option('--shard-size <n>', 'requests per shard (the unit a worker takes, retries and hands back)', intOption('--shard-size', 1, 100000), 64)
      .option('--resume', 'the job exists or Redis lost it: queue again every request that has no result and no live shard')
      .addOption(modelOption())
      .option('--json', 'print the report as JSON on stdout'),
  ).action(async (flags: SubmitFlags) => {
    const { checkJobName, connectForCommand, submitJob } = await import('../queue');
    checkJobName(flags.job);
    checkJobFlags(flags);
    if (flags.draftExit !== undefined)
      throw new OptionError('--draft-exit', 'a queued job drafts at a fixed depth (--draft-layer N): the workers on other machines need not have the exit file');
    const requests = readBatchRequests(flags.in);
    // The model names the queue (its fingerprint) and resolves --exit; it is mapped, not run.
    const model = await loadModel(flags.model, { threads: 1, backend: 'cpu' });
    let exitText: string | undefined;
    try {
      warnIfBeyondTrainedContext(flags.ctx, model.info.contextLength);
      const exit = resolveExitChoice(flags.exit, { ...model.info });
      exitText = exit.file && fs.readFileSync(exit.file, 'utf8');
    } finally {
      await model.dispose();
    }
    const redis = await connectForCommand(flags.queue);
    try {
      const report = await submitJob(redis, {
        name: flags.job,
        model: { fingerprint: model.info.fingerprint, name: model.info.name },
        requests,
        options: { ...jobOptions(flags), exitFile: exitText === undefined ? undefined : JSON.parse(exitText) },
        shardSize: flags.shardSize,
        resume: flags.resume ?? false,
        url: flags.queue,
      });
      if (flags.json) process.stdout.write(JSON.stringify(report) + '\n');
      process.stderr.write(
        `submit: job ${flags.job}${report.recreated ? ' (not in Redis any more: made again)' : ''}: ${report.queued} request(s) in ${report.shards} shard(s) ` +
          `on ${report.queue}; ${report.invalid} bad line(s) stored as error records` +
          (flags.resume ? `; ${report.alreadyDone} already have a record, ${report.inFlight} are in live shards` : '') +
          '\n',
      );
    } finally {
      redis.disconnect();
    }
  });

  batch
    .command('status <name>')
    .description('counts, throughput and ETA of a queued job (a progress bar on a terminal until it completes; --json: one object)')
    .addOption(queueOption())
    .option('--json', 'print one JSON object and exit')
    .action(async (name: string, flags: { queue: string; json?: boolean }) => {
      const { checkJobName, connectForCommand, jobStatus } = await import('../queue');
      checkJobName(name, 'NAME');
      const redis = await connectForCommand(flags.queue);
      try {
        let s = await jobStatus(redis, name, flags.queue);
        if (flags.json || !process.stderr.isTTY) {
          process.stdout.write(JSON.stringify(s, null, flags.json ? undefined : 2) + '\n');
          return;
        }
        const bar = progressBar(name, s.total, { info: true });
        for (;;) {
          bar.update(s.total - s.remaining, statusInfo(s));
          if (s.complete) break;
          await new Promise((r) => setTimeout(r, 1000));
          s = await jobStatus(redis, name, flags.queue);
        }
        bar.stop();
        process.stderr.write(`${name}: ${s.succeeded} succeeded, ${s.failed} failed of ${s.total}\n`);
      } finally {
        redis.disconnect();
      }
    });

  batch
    .command('collect <name>')
    .description("write a queued job's records to a JSONL file, in input order, each request exactly once")
    .addOption(queueOption())
    .requiredOption('-o, --out <file>', 'JSONL results (replaced)')
    .option('--partial', 'write the records there are even if some requests have none yet')
    .action(async (name: string, flags: { queue: string; out: string; partial?: boolean }) => {
      const { checkJobName, collectJob, connectForCommand } = await import('../queue');
      checkJobName(name, 'NAME');
      checkWritableFile(flags.out, '--out');
      const redis = await connectForCommand(flags.queue);
      try {
        const r = await collectJob(redis, name, flags.queue, flags.out, flags.partial ?? false);
        process.stderr.write(
          `collect: ${r.written} record(s) written to ${flags.out} (${r.errors} error record(s))${r.missing ? `; ${r.missing} request(s) have no result yet` : ''}\n`,
        );
      } finally {
        redis.disconnect();
      }
    });
}

function statusInfo(s: JobStatus): string {
  const rate = s.requestsPerSecond === null ? '–' : `${s.requestsPerSecond.toFixed(2)}/s`;
  const eta = s.etaSeconds === null ? '–' : `${Math.ceil(s.etaSeconds)} s`;
  const shards = Object.entries(s.shards)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `${s.failed} failed | ${rate} | ETA ${eta} | shards: ${shards}`;
}
