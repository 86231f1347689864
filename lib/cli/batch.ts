/**
 * `adainfer batch`: a resumable batch job. Reads JSONL prompts `{ "id", "prompt", "maxTokens"? }`, generates
 * them many at a time (Model.generateBatch: one KV cache slot per sequence, early exit per sequence with row
 * compaction) and appends one JSONL record `{ "id", "text", "tokens", "exitLayers", "timings", ... }` per
 * prompt to --out as soon as it finishes, in completion order, each written and fsync'ed before the next.
 *
 * Resuming: rerunning with the same --out skips the ids already there. A crash can leave a torn last line
 * (a record cut mid-write): an unparsable final line is dropped (the file is truncated to the line before it)
 * and that prompt runs again. Any other unparsable line is an error. Prompt i of the input file (0-based,
 * blank lines not counted) samples with seed `--seed + i`, so a resumed job writes the records an
 * uninterrupted one would.
 */
import * as fs from 'fs';
import { Command } from 'commander';
import { loadModel } from '../api';
import type { BatchSequenceResult } from '../engine/batch';
import { AdaInferError, OptionError } from '../errors';
import { loadExitFile } from '../exit/exit_file';
import { addBackendOptions, BackendFlags, floatOption, intOption, modelOption } from './options';
import { progressBar } from './progress';
import { resolveExitChoice } from './exit_choice';
import { checkWritableFile, warnIfBeyondTrainedContext } from './output';

interface BatchFlags extends BackendFlags {
  model: string;
  in: string;
  out: string;
  exit: string;
  batchSize: number;
  maxTokens: number;
  kvFill: string;
  temp: number;
  topK: number;
  topP: number;
  seed: number;
  threads?: number;
  ctx?: number;
  compaction: boolean;
}

export interface BatchInput {
  id: string | number;
  prompt: string;
  maxTokens?: number;
  /** 0-based index among the input's records (blank lines not counted). */
  index: number;
  line: number;
}

/** The key an id is deduplicated and matched by (1 and "1" are different ids). */
export const idKey = (id: unknown): string => JSON.stringify(id);

function dataError(file: string, message: string): AdaInferError {
  return new AdaInferError('DATA_FILE', `${file}: ${message}`);
}

/** Parses and checks the input JSONL: every line an object with an id and a prompt; ids unique. */
export function readBatchInput(file: string): BatchInput[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw dataError(file, `cannot read: ${(e as Error).message}`);
  }
  const records: BatchInput[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw dataError(file, `line ${line}: not valid JSON (${(e as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw dataError(file, `line ${line}: expected an object { "id", "prompt", "maxTokens"? }`);
    const o = v as Record<string, unknown>;
    const id = o.id;
    if (!((typeof id === 'string' && id.length > 0) || (typeof id === 'number' && Number.isFinite(id))))
      throw dataError(file, `line ${line}: "id" must be a non-empty string or a number`);
    if (typeof o.prompt !== 'string') throw dataError(file, `line ${line}: "prompt" must be a string`);
    if (o.maxTokens !== undefined && (typeof o.maxTokens !== 'number' || !Number.isInteger(o.maxTokens) || o.maxTokens < 0))
      throw dataError(file, `line ${line}: "maxTokens" must be an integer >= 0`);
    records.push({ id, prompt: o.prompt, maxTokens: o.maxTokens as number | undefined, index: records.length, line });
  });
  const lineOf = new Map<string, number[]>();
  for (const r of records) {
    const k = idKey(r.id);
    const at = lineOf.get(k);
    if (at) at.push(r.line);
    else lineOf.set(k, [r.line]);
  }
  const dups = [...lineOf].filter(([, at]) => at.length > 1);
  if (dups.length > 0) {
    const shown = dups.slice(0, 10).map(([k, at]) => `${k} (lines ${at.join(', ')})`);
    throw dataError(file, `duplicate ids: ${shown.join('; ')}${dups.length > 10 ? `; and ${dups.length - 10} more` : ''}`);
  }
  return records;
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
        const v = JSON.parse(raw) as { id?: unknown };
        id = v && typeof v === 'object' && !Array.isArray(v) ? v.id : undefined;
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

/** The record written for one prompt. */
export function batchRecord(input: BatchInput, r: BatchSequenceResult): Record<string, unknown> {
  return {
    id: input.id,
    text: r.text,
    tokens: r.tokens,
    exitLayers: r.exitLayers,
    timings: r.timings,
    stopReason: r.stopReason,
    promptTokens: r.promptTokens,
  };
}

export function registerBatch(program: Command): void {
  addBackendOptions(program.command('batch'))
    .description('generate for every prompt of a JSONL file, many sequences at a time (resumable)')
    .addOption(modelOption())
    .requiredOption('--in <file>', 'JSONL input: { "id", "prompt", "maxTokens"? } per line')
    .requiredOption('-o, --out <file>', 'JSONL results, appended; rerunning skips the ids already there')
    .option('--exit <file|auto|never>', "exit file made by train-exit for this model, 'auto' (the exit file shipped for the model, else full depth) or 'never'", 'never')
    .option('--batch-size <b>', 'sequences run together', intOption('--batch-size', 1, 4096), 16)
    .option('-n, --max-tokens <n>', "tokens to generate per prompt (a line's maxTokens wins)", intOption('-n/--max-tokens', 0), 128)
    .option('--kv-fill <mode>', "K/V of the layers an exit skipped: 'none' or 'propagate'", 'propagate')
    .option('--temp <t>', 'temperature (0 = greedy)', floatOption('--temp', 0), 0.8)
    .option('--top-k <k>', 'top-k (0 = off)', intOption('--top-k', 0), 40)
    .option('--top-p <p>', 'top-p (1 = off)', floatOption('--top-p', 0, 1), 0.95)
    .option('--seed <s>', 'seed; prompt i of the input samples with seed + i', intOption('--seed', 0, 0xffffffff), 0)
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-c, --ctx <n>', 'positions per sequence (default: longest prompt + max tokens, at most the model context)', intOption('--ctx', 1))
    .option('--no-compaction', 'keep exited rows in the batch (to measure what compaction gains)')
    .action(async (flags: BatchFlags) => {
      if (flags.kvFill !== 'none' && flags.kvFill !== 'propagate')
        throw new OptionError('--kv-fill', `must be 'none' or 'propagate' in batch mode ('recompute' is single-sequence only), got '${flags.kvFill}'`);
      if (flags.exit !== 'never' && flags.exit !== 'auto') loadExitFile(flags.exit); // a missing or corrupt file fails before anything runs
      checkWritableFile(flags.out, '--out');
      const inputs = readBatchInput(flags.in);
      const state = recoverOutput(flags.out);
      if (state.truncatedBytes > 0) process.stderr.write(`batch: dropped a torn last line (${state.truncatedBytes} bytes) from ${flags.out}\n`);
      const todo = inputs.filter((r) => !state.done.has(idKey(r.id)));
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
        // Tokenize first: a prompt that cannot fit is reported by id before anything runs.
        const prompts = await Promise.all(todo.map((r) => model.tokenize(r.prompt)));
        const limit = flags.ctx ?? model.info.contextLength;
        const ids = (rs: BatchInput[]) => rs.slice(0, 10).map((r) => idKey(r.id)).join(', ') + (rs.length > 10 ? ', …' : '');
        const empty = todo.filter((_, i) => prompts[i].length === 0);
        if (empty.length > 0) throw new OptionError('--in', `${empty.length} prompt(s) have no tokens: ids ${ids(empty)}`);
        const tooLong = todo.filter((_, i) => prompts[i].length > limit);
        if (tooLong.length > 0)
          throw new OptionError('--in', `${tooLong.length} prompt(s) longer than the context of ${limit} tokens: ids ${ids(tooLong)}`);
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
        const out = fd;
        const t0 = performance.now();
        await model.generateBatch(
          todo.map((r, i) => ({ prompt: prompts[i], maxTokens: r.maxTokens, seed: (flags.seed + r.index) % 0x100000000 })),
          {
            batchSize: flags.batchSize,
            maxTokens: flags.maxTokens,
            contextSize: flags.ctx,
            exit: exit.file ?? 'never',
            kvFill: flags.kvFill,
            compaction: flags.compaction,
            temperature: flags.temp,
            topK: flags.topK,
            topP: flags.topP,
            seed: flags.seed,
            addBos: false, // the token ids above already have BOS
            onResult: (r) => {
              fs.writeSync(out, JSON.stringify(batchRecord(todo[r.index], r)) + '\n');
              fs.fsyncSync(out);
              written++;
              tokens += r.tokens.length;
              for (const l of r.exitLayers) layerSum += l;
              bar.update(already + written);
            },
          },
        );
        bar.stop();
        const s = (performance.now() - t0) / 1000;
        const layers = tokens > 0 ? ` mean layers ${(layerSum / tokens).toFixed(2)}/${model.info.nLayer},` : '';
        process.stderr.write(
          `batch: ${written} record(s) written to ${flags.out} (${already} already there),${layers} ` +
            `${(written / s).toFixed(2)} prompts/s, ${(tokens / s).toFixed(1)} tokens/s\n`,
        );
      } finally {
        if (fd !== undefined) fs.closeSync(fd);
        await model.dispose();
      }
    });
}
