/** `adainfer generate`: text generation from a prompt, streamed to stdout or printed as one JSON object. */
import { Command } from 'commander';
import { GenerateOptions, type KernelVariant, loadModel, Model } from '../api';
import { OptionError } from '../errors';
import { ExitChoice, resolveExitChoice } from './exit_choice';
import { addBackendOptions, addTextOptions, BackendFlags, floatOption, hiddenAlias, intOption, modelOption, TextFlags, textOptions } from './options';
import { warnIfBeyondTrainedContext } from './output';
import { addSpeculativeOptions, SpeculativeFlags, speculativeFromFlags } from './speculative_options';

interface GenerateFlags extends BackendFlags, TextFlags, SpeculativeFlags {
  model: string;
  prompt: string;
  maxTokens: number;
  /** The old spelling `--n` (hidden alias of --max-tokens). */
  n?: number;
  exit: string;
  temp: number;
  topK: number;
  topP: number;
  seed?: number;
  threads?: number;
  ctx?: number;
  kernels?: KernelVariant;
  json?: boolean;
}


export function registerGenerate(program: Command): void {
  addSpeculativeOptions(
    addTextOptions(addBackendOptions(program.command('generate'))),
    "self-speculative decoding: drafts from the first layers, checked by the whole model (--temp defaults to 0; sampling keeps the full model's distribution)",
  )
    .description('generate text from a prompt')
    .addOption(modelOption())
    .requiredOption('-p, --prompt <text>', 'prompt text')
    .option('-n, --max-tokens <tokens>', 'tokens to generate at most', intOption('-n/--max-tokens', 0), 128)
    .addOption(hiddenAlias('--n <tokens>', intOption('--n', 0)))
    .option('--exit <file|auto|never>', "early exit: an exit file of train-exit, 'auto' (the exit file shipped for the model, else full depth) or 'never'", 'never')
    .option('--temp <t>', 'temperature (0 = greedy)', floatOption('--temp', 0), 0.8)
    .option('--top-k <k>', 'top-k (0 = off)', intOption('--top-k', 0), 40)
    .option('--top-p <p>', 'top-p (1 = off)', floatOption('--top-p', 0, 1), 0.95)
    .option('--seed <s>', 'random seed', intOption('--seed', 0, 0xffffffff))
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-c, --ctx <n>', 'context size (default: model context, at most 2048)', intOption('--ctx', 1))
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .option('--json', 'print one JSON object instead of streaming text')
    .action(async (flags: GenerateFlags, command: Command) => {
      const speculative = speculativeFromFlags(flags);
      const maxTokens = flags.n ?? flags.maxTokens;
      if (flags.speculative && flags.exit !== 'never') throw new OptionError('--exit', 'cannot be combined with --speculative');
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      try {
        warnIfBeyondTrainedContext(flags.ctx, model.info.contextLength);
        const exit = resolveExitChoice(flags.exit, { ...model.info });
        const session = await model.createSession({ contextSize: flags.ctx });
        // Speculative decoding checks the full model's greedy output: without an explicit --temp it is greedy.
        const temperature = speculative && command.getOptionValueSource('temp') === 'default' ? 0 : flags.temp;
        const options = { maxTokens, temperature, topK: flags.topK, topP: flags.topP, seed: flags.seed, ...textOptions(flags), speculative, exit: exit.file ?? 'never' };
        if (flags.json) {
          const r = await session.generate(flags.prompt, options);
          const out = {
            text: r.text,
            tokens: r.tokens,
            promptTokens: r.promptTokens,
            stopReason: r.stopReason,
            ...(r.stopString !== undefined && { stopString: r.stopString }),
            ...(r.speculative && { speculative: r.speculative }),
            exit: exit.file === undefined ? exitSummaryNone(exit, model.info.nLayer) : await exitSummary(exit.file, exit.source, r, model.info.nLayer, () => generateAtFullDepth(model, flags.ctx, flags.prompt, options)),
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

/**
 * The same request at full depth in a fresh session: the first session's cache holds the prompt's K/V as the
 * exit run left it (a prompt that exited early has propagated K/V), which a reused prefix would carry over.
 */
async function generateAtFullDepth(model: Model, contextSize: number | undefined, prompt: string, options: GenerateOptions): Promise<Generated> {
  const session = await model.createSession({ contextSize });
  try {
    return await session.generate(prompt, { ...options, exit: 'never' });
  } finally {
    await session.dispose();
  }
}

type Generated = { exitLayers: number[]; tokens: number[]; timings: { decodeMs: number; prefillMs: number } };

/** `exit` of --json at full depth: no exit file (why), every token ran all layers. */
function exitSummaryNone(exit: ExitChoice, nLayer: number) {
  return { file: null, source: exit.source, meanLayers: nLayer, exitHistogram: null, layerSpeedup: 1, speedup: null };
}

/**
 * `exit` of --json with an exit file: mean layers per generated token, the histogram (exitHistogram[i] =
 * tokens that ran i + 1 layers), the layer-count speedup nLayer / meanLayers, and the measured speedup: the
 * same request again at full depth (same seed, fresh session), time per token of the full run / of the exit run.
 */
async function exitSummary(file: string, source: string, r: Generated, nLayer: number, runFull: () => Promise<Generated>) {
  const exitHistogram = new Array<number>(nLayer).fill(0);
  for (const l of r.exitLayers) exitHistogram[l - 1]++;
  const n = r.exitLayers.length;
  const meanLayers = n > 0 ? r.exitLayers.reduce((a, b) => a + b, 0) / n : nLayer;
  const full = await runFull();
  const msPerToken = (g: Generated) => (g.timings.prefillMs + g.timings.decodeMs) / Math.max(1, g.tokens.length);
  return {
    file,
    source,
    meanLayers,
    exitHistogram,
    layerSpeedup: nLayer / meanLayers,
    speedup: n > 0 && full.tokens.length > 0 ? msPerToken(full) / msPerToken(r) : null,
    fullDepth: { tokens: full.tokens.length, prefillMs: full.timings.prefillMs, decodeMs: full.timings.decodeMs },
  };
}
