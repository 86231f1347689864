/** `adainfer generate`: text generation from a prompt, streamed to stdout or printed as one JSON object. */
import { Command } from 'commander';
import { DEFAULT_MODEL, loadModel } from '../api';
import { OptionError } from '../errors';
import { addBackendOptions, BackendFlags, floatOption, intOption } from './options';

interface GenerateFlags extends BackendFlags {
  model: string;
  prompt: string;
  n: number;
  temp: number;
  topK: number;
  topP: number;
  seed?: number;
  threads?: number;
  ctx?: number;
  kernels?: string;
  json?: boolean;
  speculative?: boolean;
  draftLayer?: number;
  draftExit?: string;
  maxDraft?: number;
}


export function registerGenerate(program: Command): void {
  addBackendOptions(program.command('generate'))
    .description('generate text from a prompt')
    .option('-m, --model <path>', 'GGUF model file or Hugging Face model folder (default: the bundled model)', DEFAULT_MODEL)
    .requiredOption('-p, --prompt <text>', 'prompt text')
    .option('-n, --n <tokens>', 'tokens to generate at most', intOption('-n', 0), 128)
    .option('--temp <t>', 'temperature (0 = greedy)', floatOption('--temp', 0), 0.8)
    .option('--top-k <k>', 'top-k (0 = off)', intOption('--top-k', 0), 40)
    .option('--top-p <p>', 'top-p (1 = off)', floatOption('--top-p', 0, 1), 0.95)
    .option('--seed <s>', 'random seed', intOption('--seed', 0, 0xffffffff))
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-c, --ctx <n>', 'context size (default: model context, at most 2048)', intOption('--ctx', 1))
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .option('--json', 'print one JSON object instead of streaming text')
    .option('--speculative', 'self-speculative decoding: drafts from the first layers, checked by the whole model (--temp defaults to 0; sampling keeps the full model\'s distribution)')
    .option('--draft-layer <n>', 'speculative: layers each drafted token runs', intOption('--draft-layer', 1))
    .option('--draft-exit <file>', 'speculative: an exit file (train-exit) decides each drafted token\'s depth')
    .option('--max-draft <k>', 'speculative: drafted tokens per verification step (default 4)', intOption('--max-draft', 1))
    .action(async (flags: GenerateFlags, command: Command) => {
      if (flags.speculative && (flags.draftLayer === undefined) === (flags.draftExit === undefined))
        throw new OptionError('--speculative', 'needs one of --draft-layer N and --draft-exit FILE');
      if (!flags.speculative && (flags.draftLayer !== undefined || flags.draftExit !== undefined || flags.maxDraft !== undefined))
        throw new OptionError('--draft-layer', '--draft-layer, --draft-exit and --max-draft need --speculative');
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      try {
        const session = await model.createSession({ contextSize: flags.ctx });
        const draft = flags.draftExit !== undefined ? flags.draftExit : { layer: flags.draftLayer! };
        const speculative = flags.speculative ? { draft, maxDraft: flags.maxDraft } : undefined;
        // Speculative decoding checks the full model's greedy output: without an explicit --temp it is greedy.
        const temperature = speculative && command.getOptionValueSource('temp') === 'default' ? 0 : flags.temp;
        const options = { maxTokens: flags.n, temperature, topK: flags.topK, topP: flags.topP, seed: flags.seed, speculative };
        if (flags.json) {
          const r = await session.generate(flags.prompt, options);
          const out = {
            text: r.text,
            tokens: r.tokens,
            promptTokens: r.promptTokens,
            stopReason: r.stopReason,
            ...(r.speculative && { speculative: r.speculative }),
            model: {
              path: model.info.path,
              name: model.info.name,
              kernels: model.info.kernels,
              backend: model.info.backend,
              device: model.info.device,
              threads: model.threads,
            },
            timings: {
              loadMs: r.timings.loadMs,
              prefillMs: r.timings.prefillMs,
              decodeMs: r.timings.decodeMs,
              prefillTokensPerSecond: r.timings.prefillTokensPerSecond,
              decodeTokensPerSecond: r.timings.decodeTokensPerSecond,
            },
          };
          process.stdout.write(JSON.stringify(out) + '\n');
        } else {
          process.stdout.write(flags.prompt);
          for await (const e of session.stream(flags.prompt, options)) process.stdout.write(e.text);
          process.stdout.write('\n');
        }
        await session.dispose();
      } finally {
        await model.dispose();
      }
    });
}
