/**
 * The options of a batch job — what runs each request: exit or self-speculative decoding, kvFill, sampling, seed,
 * token budget, batch size —
 * shared by `adainfer batch` (one machine) and `adainfer batch submit` (the queue, where they travel with the job).
 */
import * as fs from 'fs';
import { Command } from 'commander';
import { OptionError } from '../errors';
import { loadExitFile } from '../exit/exit_file';
import type { BatchJobOptions } from '../batch/run';
import { floatOption, intOption } from './options';
import { addSpeculativeOptions, SpeculativeFlags, speculativeFromFlags } from './speculative_options';

export interface JobFlags extends SpeculativeFlags {
  exit: string;
  batchSize: number;
  maxTokens: number;
  kvFill: string;
  temp: number;
  topK: number;
  topP: number;
  seed: number;
  ctx?: number;
  compaction: boolean;
  template?: string;
}

export function addJobOptions(cmd: Command): Command {
  return addSpeculativeOptions(
    cmd,
    "self-speculative decoding of every request (each drafts and verifies on its own inside the batch; the output is the full model's; not with --exit)",
  )
    .option('--exit <file|auto|never>', "exit file made by train-exit for this model, 'auto' (the exit file shipped for the model, else full depth) or 'never'", 'never')
    .option('--batch-size <b>', 'sequences run together', intOption('--batch-size', 1, 4096), 16)
    .option('-n, --max-tokens <n>', "tokens to generate per prompt (a line's maxTokens / max_tokens wins)", intOption('-n/--max-tokens', 0), 128)
    .option('--kv-fill <mode>', "K/V of the layers an exit skipped: 'none' or 'propagate'", 'propagate')
    .option('--temp <t>', "temperature (0 = greedy; a line's body.temperature wins)", floatOption('--temp', 0), 0.8)
    .option('--top-k <k>', 'top-k (0 = off)', intOption('--top-k', 0), 40)
    .option('--top-p <p>', 'top-p (1 = off)', floatOption('--top-p', 0, 1), 0.95)
    .option('--seed <s>', "seed; prompt i of the input samples with seed + i (a line's body.seed wins)", intOption('--seed', 0, 0xffffffff), 0)
    .option('-c, --ctx <n>', 'positions per sequence (default: longest prompt + max tokens, at most the model context)', intOption('--ctx', 1))
    .option('--no-compaction', 'keep exited rows in the batch (to measure what compaction gains)')
    .option('--template <name|file>', "the chat template of /v1/chat/completions lines: a built-in name (chatml, llama3, llama2) or a Jinja file (default: the model's own)");
}

/** Checks the flags (a missing or corrupt exit file fails here, before anything runs); `exit` stays as given. */
export function checkJobFlags(flags: JobFlags): void {
  if (flags.kvFill !== 'none' && flags.kvFill !== 'propagate')
    throw new OptionError('--kv-fill', `must be 'none' or 'propagate' in batch mode ('recompute' is single-sequence only), got '${flags.kvFill}'`);
  if (flags.exit !== 'never' && flags.exit !== 'auto') loadExitFile(flags.exit);
  if (speculativeFromFlags(flags) === undefined) return;
  if (flags.exit !== 'never') throw new OptionError('--exit', 'cannot be combined with --speculative');
  if (flags.draftExit !== undefined) loadExitFile(flags.draftExit);
}

/** The job's options but its exit (resolved for the model by the caller: resolveExitChoice). */
export function jobOptions(flags: JobFlags): Omit<BatchJobOptions, 'exit'> {
  return {
    kvFill: flags.kvFill as BatchJobOptions['kvFill'],
    batchSize: flags.batchSize,
    maxTokens: flags.maxTokens,
    temperature: flags.temp,
    topK: flags.topK,
    topP: flags.topP,
    seed: flags.seed,
    contextSize: flags.ctx,
    compaction: flags.compaction,
    speculative: speculativeFromFlags(flags),
    // A file's text travels with a queued job (the workers need not have the file).
    chatTemplate: flags.template !== undefined && fs.existsSync(flags.template) ? fs.readFileSync(flags.template, 'utf8') : flags.template,
  };
}
