/**
 * `adainfer serve`: the OpenAI-compatible HTTP server (lib/server/server.ts) with continuous batching. Prints one
 * line when it listens (`adainfer: listening on http://HOST:PORT (model ID, N slots)`), and shuts down gracefully
 * on SIGTERM or SIGINT: stops accepting, lets requests in flight finish for --grace seconds, cancels the rest,
 * frees the model and exits 0.
 */
import { Command } from 'commander';
import { type KernelVariant, loadModel } from '../api';
import { OptionError } from '../errors';
import { AdaInferServer } from '../server/server';
import { readTemplateFlag } from './chat';
import { findShippedExitFile, resolveExitChoice } from './exit_choice';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';
import { warnIfBeyondTrainedContext } from './output';

interface ServeFlags extends BackendFlags {
  model: string;
  host: string;
  port: number;
  parallel: number;
  queue?: number;
  exit: string;
  apiKey?: string;
  threads?: number;
  context?: number;
  kernels?: KernelVariant;
  modelId?: string;
  template?: string;
  grace: number;
}

export function registerServe(program: Command): void {
  addBackendOptions(program.command('serve'))
    .description('serve the model over HTTP, OpenAI-compatible (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics), with continuous batching')
    .addOption(modelOption())
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: a free one)', intOption('--port', 0, 65535), 8080)
    .option('--parallel <n>', 'requests decoded together (batch slots)', intOption('--parallel', 1, 4096), 16)
    .option('--queue <n>', 'requests that may wait for a slot before new ones get 503 (default 4 x --parallel)', intOption('--queue', 0, 1 << 20))
    .option('--exit <file|auto|never>', "the default early exit of requests: an exit file of train-exit, 'auto' (the exit file shipped for the model, else full depth) or 'never'; a request chooses its own with adainfer.exit", 'never')
    .option('--api-key <key>', 'clients must send Authorization: Bearer <key> (default: ADAINFER_API_KEY, else no key)')
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-c, --context <n>', 'positions per request, prompt and generated tokens (default: model context, at most 2048)', intOption('--context', 1))
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .option('--template <file|name>', "the chat template of /v1/chat/completions when the model has none (or to replace its own): a Jinja file, or a built-in name (chatml, llama3, llama2)")
    .option('--model-id <name>', 'the model name clients pass (default: the model file name without .gguf)')
    .option('--grace <s>', 'seconds requests in flight may run on after SIGTERM before they are cancelled', intOption('--grace', 0, 3600), 10)
    .action(async (flags: ServeFlags) => {
      const apiKey = flags.apiKey ?? process.env.ADAINFER_API_KEY;
      if (apiKey !== undefined && apiKey.length === 0) throw new OptionError('--api-key', 'must not be empty');
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      let server: AdaInferServer | undefined;
      try {
        warnIfBeyondTrainedContext(flags.context, model.info.contextLength);
        const exit = resolveExitChoice(flags.exit, { ...model.info });
        server = await AdaInferServer.create({
          model,
          modelId: flags.modelId,
          parallel: flags.parallel,
          maxQueue: flags.queue,
          contextSize: flags.context,
          exitFile: exit.file,
          autoExitFile: findShippedExitFile({ ...model.info }),
          apiKey,
          threads: flags.threads,
          template: readTemplateFlag(flags.template),
        });
        const url = await server.listen(flags.host, flags.port);
        process.stdout.write(`adainfer: listening on ${url} (model ${server.modelId}, ${flags.parallel} slots, exit ${exit.file ?? 'never'}, kernels ${model.info.kernels})\n`);
        const signal = await new Promise<NodeJS.Signals>((resolve) => {
          process.once('SIGTERM', () => resolve('SIGTERM'));
          process.once('SIGINT', () => resolve('SIGINT'));
        });
        process.stdout.write(`adainfer: ${signal}: shutting down (requests in flight have ${flags.grace} s)\n`);
        await server.shutdown(flags.grace * 1000);
      } finally {
        if (server) await server.shutdown(0).catch(() => undefined);
        await model.dispose();
      }
      process.stdout.write('adainfer: stopped\n');
    });
}

