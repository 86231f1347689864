/**
 * Runs batch requests on a loaded model: the one place that turns BatchRequests into Model.generateBatch calls,
 * for `adainfer batch` (one machine) and the queue's worker (one shard at a time). Requests are grouped by their
 * sampling (a line's own temperature / top_p / top_k) and stop strings, and each group is one generateBatch; a sequence's result does
 * not depend on what else its batch holds (lib/engine/batch.ts), so the grouping — like the sharding — changes no
 * text. Each request samples with requestSeed(): its own seed or job seed + its line index.
 */
import type { Model } from '../api';
import type { BatchSequenceResult, BatchKvFill, ExitSpec, SpeculativeSpec } from '../api';
import { ChatTemplate } from '../chat/template';
import { BatchRequest, requestSeed } from './requests';

/** What a batch job runs with (the CLI flags of `batch` and `batch submit`; travels with the queue's shards). */
export interface BatchJobOptions {
  /** An exit file's path, or 'never'. */
  exit: ExitSpec;
  kvFill: BatchKvFill;
  batchSize: number;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  contextSize?: number;
  compaction: boolean;
  /** Self-speculative decoding of every request (Model.generateBatch's `speculative`). */
  speculative?: SpeculativeSpec;
  /** The chat template of chat lines: a built-in name or Jinja text (default: the model's own). */
  chatTemplate?: string;
}

export interface TokenizedRequest {
  request: BatchRequest;
  tokens: number[];
}

/**
 * Tokenizes the runnable requests (text prompts get BOS as generation would; token-id prompts are used as given;
 * chat messages are rendered by the chat template and tokenized as ChatSession does) and sets aside those that
 * cannot run: no chat template, a template error, no tokens, longer than the context, ids beyond the vocabulary.
 */
export async function tokenizeRequests(
  model: Model,
  requests: BatchRequest[],
  contextLimit: number,
  chatTemplate?: string,
): Promise<{ ready: TokenizedRequest[]; rejected: { request: BatchRequest; message: string }[] }> {
  const ready: TokenizedRequest[] = [];
  const rejected: { request: BatchRequest; message: string }[] = [];
  let template: ChatTemplate | Error | undefined;
  const chatPrompt = (r: BatchRequest): Promise<number[] | Error> => {
    try {
      template ??= ChatTemplate.fromModel(model, chatTemplate);
      if (template instanceof Error) return Promise.resolve(template);
      const text = template.render(r.messages ?? [], { addGenerationPrompt: true });
      return model.tokenize(text, { addSpecial: true, parseSpecial: true });
    } catch (e) {
      if (template === undefined) template = e as Error;
      return Promise.resolve(e as Error);
    }
  };
  const tokenized = await Promise.all(
    requests.map((r) => (r.kind === 'chat' ? chatPrompt(r) : typeof r.prompt === 'string' ? model.tokenize(r.prompt) : Promise.resolve(r.prompt ?? []))),
  );
  requests.forEach((request, i) => {
    const tokens = tokenized[i];
    if (tokens instanceof Error) rejected.push({ request, message: tokens.message });
    else if (tokens.length === 0) rejected.push({ request, message: 'the prompt has no tokens' });
    else if (tokens.length > contextLimit) rejected.push({ request, message: `the prompt has ${tokens.length} tokens, more than the context of ${contextLimit}` });
    else if (tokens.some((t) => t >= model.info.nVocab))
      rejected.push({ request, message: `the prompt has a token id beyond the vocabulary of ${model.info.nVocab}` });
    else ready.push({ request, tokens });
  });
  return { ready, rejected };
}

/** Generates every request (grouped by sampling); `onResult` gets each as soon as it finishes, with its seed. */
export async function generateRequests(
  model: Model,
  items: TokenizedRequest[],
  options: BatchJobOptions,
  onResult: (request: BatchRequest, result: BatchSequenceResult, seed: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const groups = new Map<string, TokenizedRequest[]>();
  for (const item of items) {
    const s = item.request.sampling ?? {};
    const key = JSON.stringify([s.temperature ?? options.temperature, s.topK ?? options.topK, s.topP ?? options.topP, item.request.stop ?? null]);
    const group = groups.get(key);
    if (group) group.push(item);
    else groups.set(key, [item]);
  }
  for (const group of groups.values()) {
    const s = group[0].request.sampling ?? {};
    const seeds = group.map((item) => requestSeed(item.request, options.seed));
    await model.generateBatch(
      group.map((item, i) => ({ prompt: item.tokens, maxTokens: item.request.maxTokens, seed: seeds[i] })),
      {
        batchSize: options.batchSize,
        maxTokens: options.maxTokens,
        contextSize: options.contextSize,
        exit: options.exit,
        kvFill: options.kvFill,
        compaction: options.compaction,
        speculative: options.speculative,
        temperature: s.temperature ?? options.temperature,
        topK: s.topK ?? options.topK,
        topP: s.topP ?? options.topP,
        stop: group[0].request.stop,
        seed: options.seed,
        addBos: false, // the token ids already have BOS
        signal,
        onResult: (r) => onResult(group[r.index].request, r, seeds[r.index]),
      },
    );
  }
}
