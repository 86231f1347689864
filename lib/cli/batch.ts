/**
 * `adainfer batch`: a resumable batch job on one machine. Reads JSONL requests — `{ "id", "prompt", "maxTokens"? }`
 * or the OpenAI Batch API's `{ "custom_id", "method", "url", "body" }` (lib/batch/requests.ts) — generates them
 * many at a time (lib/batch/run.ts over Model.generateBatch: one KV cache slot per sequence, early exit per
 * sequence with row compaction) and appends one JSONL record per request to --out as soon as it finishes, in
 * completion order, each written and fsync'ed before the next: `{ "id", "text", "tokens", "exitLayers", ... }` for
 * a line in adainfer's shape, the OpenAI batch output shape for an OpenAI line (lib/batch/records.ts; the queue's
 * workers write the same). Its subcommands (submit, status, collect) are the multi-machine mode: batch_queue.ts.
 *
 * Resuming: rerunning with the same --out skips the ids already there. A crash can leave a torn last line
 * (a record cut mid-write): an unparsable final line is dropped (the file is truncated to the line before it)
 * and that prompt runs again. Any other unparsable line is an error. Prompt i of the input file (0-based,
 * blank lines not counted) samples with seed `--seed + i` (an OpenAI line's body.seed wins), so a resumed job
 * writes the records an uninterrupted one would.
 */
import * as fs from 'fs';
import { Command } from 'commander';
import { loadModel } from '../api';
import { completionRecord, legacyRecord, recordRequestId } from '../batch/records';
import { dataError, idKey, readBatchRequests } from '../batch/requests';
import { BatchJobOptions, generateRequests, tokenizeRequests } from '../batch/run';
import { OptionError } from '../errors';
import { addJobOptions, checkJobFlags, JobFlags, jobOptions } from './batch_options';
import { registerBatchQueue } from './batch_queue';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';
import { progressBar } from './progress';
import { resolveExitChoice } from './exit_choice';
import { checkWritableFile, warnIfBeyondTrainedContext } from './output';

interface BatchFlags extends BackendFlags, JobFlags {
  model: string;
  in?: string;
  out?: string;
  threads?: number;
}

export interface OutputState {
  /** Keys (idKey) of the records already in the file. */
  done: Set<string>;
  /** Bytes of an unparsable final line that was cut off (0: none). */
  truncatedBytes: number;
  /** The file's last record has no newline after it (one must be written before the next record). */
  needsNewline: boolean;
}

/**
 * Reads the records already in `file` (absent: none) and cuts a torn final line off the file. A record is a
 * JSON object with an "id"; any other line, except the last, is an error naming its line number.
 */
export function recoverOutput(file: string): OutputState {
  const state: OutputState = { done: new Set(), truncatedBytes: 0, needsNewline: false };
  if (!fs.existsSync(file)) return state;
  const buf = fs.readFileSync(file);
  // Line boundaries in bytes: the file is truncated at a byte offset.
  let start = 0;
  let line = 0;
  while (start < buf.length) {
    const nl = buf.indexOf(0x0a, start);
    const end = nl < 0 ? buf.length : nl;
    line++;
    const raw = buf.subarray(start, end).toString('utf8');
    const next = nl < 0 ? buf.length : nl + 1;
    if (raw.trim() !== '') {
      let id: unknown;
      try {
        id = recordRequestId(JSON.parse(raw));
      } catch {
        id = undefined;
      }
      if (id === undefined) {
        const rest = buf.subarray(next).toString('utf8');
        if (rest.trim() !== '') throw dataError(file, `line ${line} is not a result record; fix or remove it before resuming`);
        // The torn last record of an interrupted run: cut it off, its prompt runs again.
        fs.truncateSync(file, start);
        state.truncatedBytes = buf.length - start;
        return state;
      }
      state.done.add(idKey(id));
      state.needsNewline = nl < 0;
    }
    start = next;
  }
  return state;
}

export function registerBatch(program: Command): void {
  const batch = addJobOptions(
    addBackendOptions(program.command('batch'))
      .description('generate for every request of a JSONL file, many sequences at a time (resumable); submit/status/collect: across machines')
      .enablePositionalOptions() // its options come before a subcommand, whose own options follow it
      .addOption(modelOption())
      .option('--in <file>', 'JSONL input: { "id", "prompt", "maxTokens"? } or OpenAI batch lines { "custom_id", "method", "url", "body" }')
      .option('-o, --out <file>', 'JSONL results, appended; rerunning skips the ids already there'),
  )
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .action(async (flags: BatchFlags) => {
      if (flags.in === undefined) throw new OptionError('--in', "required (or a subcommand: submit, status, collect)");
      if (flags.out === undefined) throw new OptionError('--out', 'required');
      checkJobFlags(flags);
      checkWritableFile(flags.out, '--out');
      const inputs = readBatchRequests(flags.in);
      const bad = inputs.filter((r) => r.invalid);
      if (bad.length > 0) {
        const shown = bad.slice(0, 5).map((r) => `line ${r.line}: ${r.invalid!.message}`);
        throw dataError(flags.in, `${shown.join('; ')}${bad.length > 5 ? `; and ${bad.length - 5} more` : ''}`);
      }
      const state = recoverOutput(flags.out);
      if (state.truncatedBytes > 0) process.stderr.write(`batch: dropped a torn last line (${state.truncatedBytes} bytes) from ${flags.out}\n`);
      const todo = inputs.filter((r) => !state.done.has(r.key));
      const already = inputs.length - todo.length;
      if (todo.length === 0) {
        process.stderr.write(`batch: all ${inputs.length} records are already in ${flags.out}\n`);
        return;
      }
      const model = await loadModel(flags.model, { threads: flags.threads, backend: flags.backend, device: flags.device });
      let fd: number | undefined;
      try {
        warnIfBeyondTrainedContext(flags.ctx, model.info.contextLength);
        const exit = resolveExitChoice(flags.exit, { ...model.info });
        // Tokenize first: a prompt that cannot run is reported by id before anything runs.
        const options = { ...jobOptions(flags), exit: exit.file ?? 'never' };
        const { ready, rejected } = await tokenizeRequests(model, todo, flags.ctx ?? model.info.contextLength, options.chatTemplate);
        if (rejected.length > 0) {
          const shown = rejected.slice(0, 10).map((r) => `${r.request.key}: ${r.message}`);
          throw new OptionError('--in', `${rejected.length} prompt(s) cannot run: ${shown.join('; ')}${rejected.length > 10 ? '; …' : ''}`);
        }
        fd = fs.openSync(flags.out, 'a');
        if (state.needsNewline) {
          fs.writeSync(fd, '\n');
          fs.fsyncSync(fd);
        }
        const bar = progressBar('batch', inputs.length);
        bar.update(already);
        let written = 0;
        let tokens = 0;
        let layerSum = 0;
        // Self-speculative decoding: drafts and acceptances over every request, and the layers they computed.
        let drafted = 0;
        let accepted = 0;
        let specLayers = 0;
        const out = fd;
        const t0 = performance.now();
        const recordModel = { name: model.info.name, fingerprint: model.info.fingerprint, nLayer: model.info.nLayer };
        await generateRequests(model, ready, options, (request, r, seed) => {
          const record = request.shape === 'legacy' ? legacyRecord(request, r) : completionRecord(request, r, recordModel, seed);
          fs.writeSync(out, JSON.stringify(record) + '\n');
          fs.fsyncSync(out);
          written++;
          tokens += r.tokens.length;
          for (const l of r.exitLayers) layerSum += l;
          if (r.speculative) {
            drafted += r.speculative.drafted;
            accepted += r.speculative.accepted;
            specLayers += r.speculative.layersPerToken * r.tokens.length;
          }
          bar.update(already + written);
        });
        bar.stop();
        const s = (performance.now() - t0) / 1000;
        const layers = tokens === 0 ? '' : options.speculative
          ? ` speculative: ${drafted} drafted, acceptance ${drafted > 0 ? ((100 * accepted) / drafted).toFixed(1) : '0.0'}%, layers computed per token ${(specLayers / tokens).toFixed(2)}/${model.info.nLayer},`
          : ` mean layers ${(layerSum / tokens).toFixed(2)}/${model.info.nLayer},`;
        process.stderr.write(
          `batch: ${written} record(s) written to ${flags.out} (${already} already there),${layers} ` +
            `${(written / s).toFixed(2)} prompts/s, ${(tokens / s).toFixed(1)} tokens/s\n`,
        );
      } finally {
        if (fd !== undefined) fs.closeSync(fd);
        await model.dispose();
      }
    });
  registerBatchQueue(batch);
}
