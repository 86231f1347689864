/**
 * `adainfer chat`: an interactive conversation in the terminal (a ChatSession: the model's chat template or
 * --template, history, the KV cache reused between turns). Each reply streams as it is generated. /exit or Ctrl-D
 * (end of input) quits; Ctrl-C during a reply cancels that reply (the conversation goes on without it), at the
 * prompt it clears the line.
 */
import * as fs from 'fs';
import * as readline from 'readline';
import { Command } from 'commander';
import { type KernelVariant, loadModel } from '../api';
import { AdaInferError, OptionError } from '../errors';
import { BUILTIN_TEMPLATES } from '../chat/template';
import type { ChatSession } from '../chat/session';
import { resolveExitChoice } from './exit_choice';
import { addBackendOptions, addTextOptions, BackendFlags, floatOption, intOption, modelOption, TextFlags, textOptions } from './options';
import { warnIfBeyondTrainedContext } from './output';

interface ChatFlags extends BackendFlags, TextFlags {
  model: string;
  system?: string;
  template?: string;
  exit: string;
  maxTokens: number;
  temp: number;
  topK: number;
  topP: number;
  seed?: number;
  threads?: number;
  ctx?: number;
  kernels?: KernelVariant;
}

const PROMPT = '> ';
const EXIT_COMMAND = '/exit';

/** `--template`: a built-in name, else a file holding Jinja text. */
export function readTemplateFlag(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (Object.prototype.hasOwnProperty.call(BUILTIN_TEMPLATES, value)) return value;
  let text: string;
  try {
    text = fs.readFileSync(value, 'utf8');
  } catch {
    throw new OptionError('--template', `'${value}' is neither a built-in template (${Object.keys(BUILTIN_TEMPLATES).join(', ')}) nor a readable file`);
  }
  if (text.length === 0) throw new OptionError('--template', `${value} is empty`);
  return text;
}

export function registerChat(program: Command): void {
  addTextOptions(addBackendOptions(program.command('chat')))
    .description('chat with a model in the terminal (its chat template, or --template); /exit or Ctrl-D quits, Ctrl-C cancels a reply')
    .addOption(modelOption())
    .option('--system <text>', 'system prompt (the first message of the conversation)')
    .option('--template <file|name>', `chat template: a Jinja file or a built-in (${Object.keys(BUILTIN_TEMPLATES).join(', ')}); default: the model's own`)
    .option('--exit <file|auto|never>', "early exit: an exit file of train-exit, 'auto' (the exit file shipped for the model, else full depth) or 'never'", 'never')
    .option('-n, --max-tokens <tokens>', 'tokens per reply at most', intOption('-n/--max-tokens', 0), 512)
    .option('--temp <t>', 'temperature (0 = greedy)', floatOption('--temp', 0), 0.8)
    .option('--top-k <k>', 'top-k (0 = off)', intOption('--top-k', 0), 40)
    .option('--top-p <p>', 'top-p (1 = off)', floatOption('--top-p', 0, 1), 0.95)
    .option('--seed <s>', 'random seed', intOption('--seed', 0, 0xffffffff))
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-c, --ctx <n>', 'context size: the whole conversation must fit (default: model context, at most 2048)', intOption('--ctx', 1))
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .action(async (flags: ChatFlags) => {
      const template = readTemplateFlag(flags.template);
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      try {
        warnIfBeyondTrainedContext(flags.ctx, model.info.contextLength);
        const exit = resolveExitChoice(flags.exit, { ...model.info });
        const chat = await model.createChatSession({ contextSize: flags.ctx, systemPrompt: flags.system, template });
        const options = {
          maxTokens: flags.maxTokens,
          temperature: flags.temp,
          topK: flags.topK,
          topP: flags.topP,
          seed: flags.seed,
          ...textOptions(flags),
          exit: exit.file ?? 'never',
        };
        process.stderr.write(`adainfer chat: ${model.info.name}, template ${chat.template.name ?? flags.template}; ${EXIT_COMMAND} or Ctrl-D quits, Ctrl-C cancels a reply\n`);
        await converse(chat, options);
        await chat.dispose();
      } finally {
        await model.dispose();
      }
    });
}

/** The read-answer loop until /exit or the end of input. */
async function converse(chat: ChatSession, options: Parameters<ChatSession['stream']>[1]): Promise<void> {
  const terminal = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal, prompt: PROMPT });
  let reply: AbortController | undefined;
  // Ctrl-C: cancels the reply being written; at the prompt, drops the line typed so far. (On a terminal readline
  // reads ^C as a key; piped input gets the signal itself.)
  const interrupt = () => {
    if (reply) {
      reply.abort();
      return;
    }
    process.stdout.write('^C\n');
    if (terminal) rl.write(null, { ctrl: true, name: 'u' });
    rl.prompt();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  const lines = rl[Symbol.asyncIterator]();
  try {
    for (;;) {
      rl.prompt();
      const next = await lines.next();
      if (next.done) break;
      const text = next.value.trim();
      if (text === EXIT_COMMAND) break;
      if (text.length === 0) continue;
      reply = new AbortController();
      try {
        for await (const e of chat.stream(text, { ...options, signal: reply.signal })) process.stdout.write(e.text);
        process.stdout.write('\n');
      } catch (err) {
        if (!(err instanceof AdaInferError)) throw err;
        if (err.code === 'ABORTED') process.stdout.write('\n[reply cancelled]\n');
        else if (err.code === 'CONTEXT_OVERFLOW') process.stderr.write(`adainfer: the conversation no longer fits the context (-c/--ctx): ${err.message}\n`);
        else throw err;
      } finally {
        reply = undefined;
      }
    }
  } finally {
    process.off('SIGINT', interrupt);
    rl.close();
  }
  if (terminal) process.stdout.write('\n');
}
