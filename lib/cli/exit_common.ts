/** What train-exit and eval-exit share: loading the model and the examples. */
import { Command } from 'commander';
import { native } from '../bindings/native';
import { OptionError } from '../errors';
import { Example, loadExamples } from '../exit/data';
import { LlamaContext, LlamaModel } from '../model/llama';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';

export interface ExampleFlags extends BackendFlags {
  model: string;
  data: string;
  window: number;
  limit?: number;
  seed: number;
  threads?: number;
}

export function addExampleOptions(cmd: Command): Command {
  return addBackendOptions(cmd)
    .addOption(modelOption())
    .requiredOption('--data <file>', 'JSONL {prompt, answer?} lines, or plain text with <|endoftext|> between documents')
    .option('--window <w>', 'plain text: tokens of context before each position', intOption('--window', 1), 64)
    .option('--limit <n>', 'examples drawn (seeded) from the data', intOption('--limit', 1))
    .option('--seed <s>', 'seed of the draws and splits', intOption('--seed', 0, 0xffffffff), 1)
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024));
}

export interface Loaded {
  model: LlamaModel;
  ctx: LlamaContext;
  examples: Example[];
}

export function loadForExit(flags: ExampleFlags, lensK: number): Loaded {
  const model = LlamaModel.load(flags.model, { backend: flags.backend, device: flags.device });
  if (flags.window >= model.config.contextLength)
    throw new OptionError('--window', `must be below the model's context length ${model.config.contextLength}`);
  const examples = loadExamples(flags.data, model.tokenizer, { window: flags.window, limit: flags.limit, seed: flags.seed });
  const longest = examples.reduce((m, e) => Math.max(m, e.tokens.length), 1);
  if (longest > model.config.contextLength)
    throw new OptionError('--data', `a prompt has ${longest} tokens, more than the model's context ${model.config.contextLength}`);
  const ctx = model.createContext({
    contextSize: longest,
    batchSize: longest,
    threads: flags.threads ?? native().systemInfo().physicalCores,
    lensK,
  });
  return { model, ctx, examples };
}
