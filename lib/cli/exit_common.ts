/** What train-exit and eval-exit share: loading the model and the examples. */
import { Command } from 'commander';
import { native } from '../bindings/native';
import { OptionError } from '../errors';
import { DocumentPart, Example, loadExamples } from '../exit/data';
import { FEATURE_NAMES, FeatureName } from '../exit/classifier';
import { TransformerContext, TransformerModel } from '../model/transformer';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';

export interface ExampleFlags extends BackendFlags {
  model: string;
  data: string;
  window: number;
  limit?: number;
  seed: number;
  threads?: number;
  docPart?: DocumentPart;
}

/** The seed of --doc-part when it names none: the same halves of a file for train-exit's calibration and eval-exit. */
export const DOC_PART_SEED = 1;

/** `i/n` or `i/n:seed`: part i (0-based) of n seeded equal parts of a file's documents. */
export function docPartOption(flag: string) {
  return (value: string): DocumentPart => {
    const m = /^(\d+)\/(\d+)(?::(\d+))?$/.exec(value.trim());
    const part = m ? Number(m[1]) : NaN;
    const parts = m ? Number(m[2]) : NaN;
    if (!m || parts < 1 || part >= parts) throw new OptionError(flag, `expected i/n or i/n:seed with 0 <= i < n, got '${value}'`);
    return { part, parts, seed: m[3] !== undefined ? Number(m[3]) : DOC_PART_SEED };
  };
}

export function addExampleOptions(cmd: Command): Command {
  return addBackendOptions(cmd)
    .addOption(modelOption())
    .requiredOption('--data <file>', 'JSONL {prompt, answer?} lines, or plain text with <|endoftext|> between documents')
    .option('--window <w>', 'plain text: tokens of context before each position', intOption('--window', 1), 64)
    .option('--limit <n>', 'examples drawn (seeded) from the data', intOption('--limit', 1))
    .option('--seed <s>', 'seed of the draws and splits', intOption('--seed', 0, 0xffffffff), 1)
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('--doc-part <i/n>', "only part i of n seeded equal parts of the data's documents (i/n:seed; e.g. 0/2 and 1/2: disjoint halves)", docPartOption('--doc-part'));
}

export interface Loaded {
  model: TransformerModel;
  ctx: TransformerContext;
  examples: Example[];
  /** The examples of `second`, when given (train-exit's calibration data). */
  secondExamples?: Example[];
}

/** A second data file read as the first (same window and seed), e.g. train-exit's --calibration-data. */
export interface SecondData {
  data: string;
  limit?: number;
  docPart?: DocumentPart;
}

export function loadForExit(flags: ExampleFlags, lensK: number, second?: SecondData): Loaded {
  const model = TransformerModel.load(flags.model, { backend: flags.backend, device: flags.device });
  if (flags.window >= model.config.contextLength)
    throw new OptionError('--window', `must be below the model's context length ${model.config.contextLength}`);
  const examples = loadExamples(flags.data, model.tokenizer, { window: flags.window, limit: flags.limit, seed: flags.seed, documents: flags.docPart });
  const secondExamples =
    second && loadExamples(second.data, model.tokenizer, { window: flags.window, limit: second.limit, seed: flags.seed, documents: second.docPart });
  const longest = [...examples, ...(secondExamples ?? [])].reduce((m, e) => Math.max(m, e.tokens.length), 1);
  if (longest > model.config.contextLength)
    throw new OptionError('--data', `a prompt has ${longest} tokens, more than the model's context ${model.config.contextLength}`);
  const ctx = model.createContext({
    contextSize: longest,
    batchSize: longest,
    threads: flags.threads ?? native().systemInfo().physicalCores,
    lensK,
  });
  return { model, ctx, examples, secondExamples };
}

/** `--features a,b,c`: the classifier's features (lib/exit/classifier.ts lists them), each once. */
export function featuresOption(value: string): FeatureName[] {
  const names = value.split(',').map((s) => s.trim());
  const bad = names.filter((n) => !(FEATURE_NAMES as readonly string[]).includes(n));
  if (bad.length > 0) throw new OptionError('--features', `unknown feature(s) ${bad.join(', ')}; known: ${FEATURE_NAMES.join(', ')}`);
  if (new Set(names).size !== names.length) throw new OptionError('--features', `a feature is named twice in '${value}'`);
  return names as FeatureName[];
}
