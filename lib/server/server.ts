/**
 * The OpenAI-compatible HTTP server (`adainfer serve`), on fastify: JSON Schema validation of every body before a
 * handler runs (Ajv, compiled once), a small, well-kept, fast framework with graceful close built in.
 *
 * Every generation runs in one continuous batch on the model's worker thread (Model.openBatch: lib/engine/batch.ts
 * OpenBatch): a request's choices join the running batch at the next decode step that has a free slot, each with
 * its own sampling, limit and exit policy (or self-speculative decoding: `adainfer.speculative`), and leave it
 * when they finish; a client that disconnects cancels its
 * choices, which leave at the next step. The event loop here only parses, validates and writes: it keeps
 * answering /health while the worker decodes.
 *
 *   POST /v1/completions, POST /v1/chat/completions (stream: server-sent events in OpenAI's chunk format),
 *   GET /v1/models, GET /health, GET /metrics (Prometheus text).
 *
 * Errors are OpenAI's `{ error: { message, type, param, code } }`: 400 (bad JSON, a field of the wrong type, an
 * option the engine refuses), 401 (API key), 404 (unknown model or route), 413 (a body
 * over the limit, a prompt longer than the context), 503 with Retry-After (the queue is full, or the server is
 * shutting down).
 */
import { randomUUID, timingSafeEqual } from 'crypto';
import * as path from 'path';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { BatchRequestOptions, BatchRequestStream, ContinuousBatch, ExitSpec, Model, SpeculativeSpec } from '../api';
import type { BatchSequenceResult } from '../engine/batch';
import { AdaInferError } from '../errors';
import {
  adainferReport,
  ApiError,
  ChatBody,
  chatBodySchema,
  ChatMessage,
  CommonBody,
  CompletionBody,
  completionBodySchema,
  finishReason,
  invalidRequest,
  ThresholdExit,
  Usage,
} from './openai';
import { ServerMetrics } from './metrics';
import { ChatTemplate } from '../chat/template';

/** Renders a conversation into the prompt text the model continues: a ChatTemplate (lib/chat/template.ts). */
export interface ChatRenderer {
  render(messages: { role: string; content: string }[], options?: { addGenerationPrompt?: boolean }): string;
}

export interface ServerOptions {
  model: Model;
  /** The name clients pass as `model` (GET /v1/models lists it). Default: the model file's name without .gguf. */
  modelId?: string;
  /** Requests decoded together (batch slots; default 16). */
  parallel?: number;
  /** Positions per request (default: the model's context length, at most 2048). */
  contextSize?: number;
  /** Generations that may wait for a slot beyond `parallel` before new ones get 503 (default 4 × parallel). */
  maxQueue?: number;
  /** The server's exit policy (`adainfer.exit: 'default'` and requests without one): an exit file, or undefined: full depth. */
  exitFile?: string;
  /** The model's shipped exit file (`adainfer.exit: 'auto'`), if it has one. */
  autoExitFile?: string;
  /** Clients must send `Authorization: Bearer <apiKey>` to /v1/* (default: no key). */
  apiKey?: string;
  /**
   * The chat template: a ChatRenderer, or undefined for the model's own (ChatTemplate.fromModel). A model without
   * one makes /v1/chat/completions answer 400 chat_template_missing, naming the fix (`template`, --template).
   */
  chat?: ChatRenderer;
  /** Overrides the model's chat template: a built-in name (chatml, llama3, llama2) or Jinja text. */
  template?: string;
  /** Largest request body in bytes (default 1 MiB; more is 413). */
  bodyLimit?: number;
  threads?: number;
}

type Endpoint = 'completions' | 'chat';

/** One generation of a request: a prompt (one of its prompts, one of its n choices) submitted to the batch. */
interface Choice {
  index: number;
  /** Text (tokenized on the worker as the request is admitted) or token ids. */
  prompt: string | number[];
  /** Its prompt's first choice (the one whose prompt tokens `usage` counts). */
  firstOfPrompt: boolean;
  promptTokens: number;
  options: BatchRequestOptions;
  controller: AbortController;
  stream?: BatchRequestStream;
  text: string;
  exitLayers: number[];
  finish?: 'stop' | 'length';
  /** The worker's timings (set with `finish`). */
  timings?: BatchSequenceResult['timings'];
  /** How its self-speculative decoding went (set with `finish`). */
  speculative?: BatchSequenceResult['speculative'];
}

export class AdaInferServer {
  readonly app: FastifyInstance;
  readonly metrics: ServerMetrics;
  readonly modelId: string;
  private draining = false;
  private readonly created = Math.floor(Date.now() / 1000);
  /** The AbortControllers of requests in flight (shutdown cancels them after the grace period). */
  private readonly inflight = new Set<AbortController>();
  /** The chat template, or why there is none (the message of /v1/chat/completions' 400). */
  private readonly chat: ChatRenderer | { missing: string };

  private constructor(
    private readonly options: ServerOptions & { parallel: number; maxQueue: number },
    private readonly batch: ContinuousBatch,
  ) {
    this.chat = options.chat ?? chatTemplateOf(options.model, options.template);
    const model = options.model;
    this.modelId = options.modelId ?? path.basename(model.info.path).replace(/\.gguf$/i, '');
    this.metrics = new ServerMetrics({
      running: () => Math.min(batch.inFlight, options.parallel),
      waiting: () => Math.max(0, batch.inFlight - options.parallel),
      slots: options.parallel,
    });
    this.app = Fastify({
      logger: false,
      bodyLimit: options.bodyLimit ?? 1 << 20,
      // Types are checked, never coerced ("5" is not a number); nothing is removed or defaulted behind the client's back.
      ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
      forceCloseConnections: 'idle',
      return503OnClosing: true,
    });
    this.routes();
  }

  /** Opens the model's continuous batch and builds the routes (call listen() to serve). */
  static async create(options: ServerOptions): Promise<AdaInferServer> {
    const parallel = options.parallel ?? 16;
    const exitFiles = [options.exitFile, options.autoExitFile].filter((f): f is string => f !== undefined);
    const batch = await options.model.openBatch({ slots: parallel, contextSize: options.contextSize, threads: options.threads, exitFiles });
    return new AdaInferServer({ ...options, parallel, maxQueue: options.maxQueue ?? 4 * parallel }, batch);
  }

  async listen(host = '127.0.0.1', port = 8080): Promise<string> {
    return this.app.listen({ host, port });
  }

  /** The port it listens on (after listen()). */
  get port(): number {
    const a = this.app.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  /**
   * Graceful shutdown: new requests get 503, the listening socket closes, requests in flight finish (those still
   * running after `graceMs` are cancelled: a stream gets an error event, a plain request a 503), then the batch is
   * closed. The model stays loaded (its owner disposes it).
   */
  shutdown(graceMs = 10_000): Promise<void> {
    this.stopping ??= this.stop(graceMs);
    return this.stopping;
  }

  private stopping: Promise<void> | undefined;

  private async stop(graceMs: number): Promise<void> {
    this.draining = true;
    const closing = this.app.close();
    const timer = setTimeout(() => {
      for (const c of this.inflight) c.abort(new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down'));
    }, graceMs);
    try {
      await closing;
    } finally {
      clearTimeout(timer);
    }
    await this.batch.close({ cancel: true });
  }

  // -------------------------------------------------------------------------------------------------

  private routes(): void {
    const app = this.app;
    app.setErrorHandler((err, req, reply) => {
      const e = toApiError(err);
      this.metrics.request(endpointLabel(req), e.status);
      if (e.status === 503) reply.header('retry-after', '1');
      void reply.status(e.status).send(e.body());
    });
    app.setNotFoundHandler((req, reply) => {
      const e = new ApiError(404, `no route ${req.method} ${req.url}`, 'invalid_request_error', null, 'not_found');
      this.metrics.request('other', 404);
      void reply.status(404).send(e.body());
    });
    app.addHook('onRequest', async (req) => {
      if (!req.url.startsWith('/v1/')) return;
      if (this.options.apiKey !== undefined && !keyMatches(req.headers.authorization, this.options.apiKey))
        throw new ApiError(401, 'missing or wrong API key: send Authorization: Bearer <key>', 'invalid_request_error', null, 'invalid_api_key');
      if (this.draining) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
    });

    app.get('/health', async () => ({ status: this.draining ? 'shutting_down' : 'ok', slots: this.options.parallel, inFlight: this.batch.inFlight }));
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', this.metrics.registry.contentType);
      return this.metrics.registry.metrics();
    });
    app.get('/v1/models', async () => ({
      object: 'list',
      data: [{ id: this.modelId, object: 'model', created: this.created, owned_by: 'adainfer' }],
    }));
    app.post('/v1/completions', { schema: { body: completionBodySchema } }, (req, reply) => this.generate('completions', req, reply));
    app.post('/v1/chat/completions', { schema: { body: chatBodySchema } }, (req, reply) => this.generate('chat', req, reply));
  }

  /** Both endpoints: prompts, limits, admission, the batch, and the answer (JSON or server-sent events). */
  private async generate(endpoint: Endpoint, req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const started = performance.now();
    const body = req.body as CompletionBody | ChatBody;
    if (body.model !== this.modelId)
      throw new ApiError(404, `the model '${body.model}' does not exist; this server serves '${this.modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
    refuseUnsupported(endpoint, body);
    const speculative = this.speculativeOf(body);
    const { spec: exit, label: exitLabel } = speculative ? { spec: 'never' as const, label: 'never' } : this.exitOf(body);
    // Prompts go to the worker as they are (text is tokenized there, as the request is submitted: no extra round
    // trip); one longer than the context is refused there (CONTEXT_OVERFLOW: 413) before it takes a slot.
    const prompts = endpoint === 'chat' ? [this.chatPrompt(body as ChatBody)] : completionPrompts(body as CompletionBody);
    const n = body.n ?? 1;
    const maxTokens = (endpoint === 'chat' ? (body as ChatBody).max_completion_tokens : undefined) ?? body.max_tokens ?? (endpoint === 'chat' ? this.batch.contextSize : 16);
    const count = prompts.length * n;
    if (this.batch.inFlight + count > this.options.parallel + this.options.maxQueue)
      throw new ApiError(503, `the server is busy: ${this.batch.inFlight} generations in flight (${this.options.parallel} slots, ${this.options.maxQueue} queued at most); retry later`, 'server_error', null, 'server_overloaded');

    const stop = body.stop === undefined || body.stop === null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
    if (stop?.some((s) => s.length === 0)) throw invalidRequest('stop strings must not be empty', 'stop');
    const request = new AbortController();
    const choices: Choice[] = [];
    prompts.forEach((prompt, p) => {
      for (let j = 0; j < n; j++) {
        const controller = new AbortController();
        const seed = body.seed === undefined || body.seed === null ? undefined : (((body.seed + j) % 0x100000000) + 0x100000000) % 0x100000000;
        choices.push({
          index: p * n + j,
          prompt,
          firstOfPrompt: j === 0,
          promptTokens: 0,
          options: {
            maxTokens,
            temperature: body.temperature ?? 1,
            topP: body.top_p ?? 1,
            topK: body.top_k ?? 0,
            seed,
            stop,
            presencePenalty: body.presence_penalty ?? 0,
            frequencyPenalty: body.frequency_penalty ?? 0,
            repeatPenalty: body.repeat_penalty ?? 1,
            repeatLastN: body.repeat_last_n ?? 64,
            exit,
            speculative: speculative?.spec,
            // chat: the template wrote the control tokens as text; the tokenizer adds BOS where the model wants it
            // (render() dropped the template's own leading BOS text)
            parseSpecial: endpoint === 'chat',
            signal: AbortSignal.any([request.signal, controller.signal]),
          },
          controller,
          text: '',
          exitLayers: [],
        });
      }
    });
    // A client that goes away cancels its generations: they leave the batch at the next step.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) request.abort(new ApiError(499, 'the client closed the connection', 'invalid_request_error'));
    });
    this.inflight.add(request);
    const id = (endpoint === 'chat' ? 'chatcmpl-' : 'cmpl-') + randomUUID().replace(/-/g, '');
    const created = Math.floor(Date.now() / 1000);
    let first = true;
    const onToken = (exitLayer: number) => {
      this.metrics.token(exitLayer);
      if (first) {
        first = false;
        this.metrics.firstToken((performance.now() - started) / 1000);
      }
    };
    const usage = (): Usage => {
      const prompt = choices.reduce((s, c) => s + (c.firstOfPrompt ? c.promptTokens : 0), 0);
      const completion = choices.reduce((s, c) => s + c.exitLayers.length, 0);
      this.metrics.prompt(prompt);
      return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
    };
    const report = () => adainferReport(this.options.model.info.nLayer, exitLabel, choices, speculative?.label);
    try {
      for (const c of choices) c.stream = this.batch.submit(c.prompt, c.options);
      if (body.stream) await this.streamAnswer(endpoint, body, reply, choices, { id, created, onToken, usage, report, request });
      else {
        await Promise.all(choices.map((c) => runChoice(c, onToken)));
        const u = usage();
        this.metrics.request(endpoint, 200);
        void reply.send(
          endpoint === 'chat'
            ? {
                id,
                object: 'chat.completion',
                created,
                model: this.modelId,
                choices: choices.map((c) => ({ index: c.index, message: { role: 'assistant', content: c.text }, logprobs: null, finish_reason: c.finish })),
                usage: u,
                adainfer: report(),
              }
            : {
                id,
                object: 'text_completion',
                created,
                model: this.modelId,
                choices: choices.map((c) => ({ index: c.index, text: c.text, logprobs: null, finish_reason: c.finish })),
                usage: u,
                adainfer: report(),
              },
        );
        await reply;
      }
    } catch (err) {
      for (const c of choices) c.controller.abort();
      // A cancellation by shutdown answers with its reason (503); a client that left gets nothing.
      const reason = request.signal.aborted ? request.signal.reason : undefined;
      throw reason instanceof ApiError ? reason : err;
    } finally {
      for (const c of choices) if (c.timings) this.metrics.batchTimings(c.timings.queuedMs, c.timings.prefillMs);
      this.inflight.delete(request);
      this.metrics.finished((performance.now() - started) / 1000);
    }
  }

  /** Server-sent events: one chunk per token (per choice), then the finishing chunk(s) and `data: [DONE]`. */
  private async streamAnswer(
    endpoint: Endpoint,
    body: CommonBody,
    reply: FastifyReply,
    choices: Choice[],
    s: { id: string; created: number; onToken: (layer: number) => void; usage: () => Usage; report: () => unknown; request: AbortController },
  ): Promise<void> {
    const res = reply.raw;
    reply.hijack();
    // The status line waits for the first event: a request refused before its first token (a prompt longer than
    // the context, a shutdown) still gets its error status and JSON body.
    const send = (data: unknown) => {
      if (res.writableEnded || res.destroyed) return;
      if (!res.headersSent)
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(`data: ${data === DONE ? DONE : JSON.stringify(data)}\n\n`);
    };
    const chat = endpoint === 'chat';
    const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
      id: s.id,
      object: chat ? 'chat.completion.chunk' : 'text_completion',
      created: s.created,
      model: this.modelId,
      choices: [choice],
      ...extra,
    });
    if (chat) for (const c of choices) send(chunk({ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
    const piece = (c: Choice, text: string) =>
      send(chunk(chat ? { index: c.index, delta: { content: text }, logprobs: null, finish_reason: null } : { index: c.index, text, logprobs: null, finish_reason: null }));
    try {
      await Promise.all(
        choices.map(async (c) => {
          await runChoice(c, s.onToken, (text) => piece(c, text));
          const last = chat ? { index: c.index, delta: {}, logprobs: null, finish_reason: c.finish } : { index: c.index, text: '', logprobs: null, finish_reason: c.finish };
          send(chunk(last));
        }),
      );
      // usage and the adainfer report: on a last chunk with no choices (OpenAI's stream_options.include_usage form,
      // sent always: clients skip chunks with no choices).
      send({ id: s.id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: s.created, model: this.modelId, choices: [], usage: s.usage(), adainfer: s.report() });
      send(DONE);
      this.metrics.request(endpoint, 200);
    } catch (err) {
      const reason = s.request.signal.aborted ? s.request.signal.reason : undefined;
      const e = reason instanceof ApiError ? reason : toApiError(err);
      this.metrics.request(endpoint, e.status);
      if (res.headersSent) send(e.body());
      else if (!res.destroyed) {
        res.writeHead(e.status, { 'content-type': 'application/json; charset=utf-8', ...(e.status === 503 && { 'retry-after': '1' }) });
        res.write(JSON.stringify(e.body()));
      }
    } finally {
      if (!res.writableEnded) res.end();
    }
    void body;
  }

  /** The conversation rendered by the chat template. */
  private chatPrompt(body: ChatBody): string {
    const chat = this.chat;
    if ('missing' in chat) throw invalidRequest(`the model '${this.modelId}': ${chat.missing}`, 'messages', 'chat_template_missing');
    const messages = body.messages.map((m: ChatMessage) => ({
      role: m.role,
      content: typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((part) => part.text ?? '').join('') : '',
    }));
    return chat.render(messages, { addGenerationPrompt: true });
  }

  /**
   * A request's self-speculative decoding (undefined: none) and how the response names its drafter. It replaces
   * the request's exit policy (the output is the full model's): naming both is refused.
   */
  private speculativeOf(body: CommonBody): { spec: SpeculativeSpec; label: string } | undefined {
    const s = body.adainfer?.speculative;
    if (s === undefined || s === null || s === false) return undefined;
    const exit = body.adainfer?.exit;
    if (exit !== undefined && exit !== 'never')
      throw invalidRequest('adainfer.speculative drafts with its own policy: it cannot be combined with adainfer.exit', 'adainfer.exit');
    const o = s === true ? {} : s;
    const draft = o.draft ?? 'default';
    const file = (f: string | undefined, why: string) => {
      if (f === undefined) throw invalidRequest(why, 'adainfer.speculative.draft', 'no_exit_file');
      return { draft: f, label: path.basename(f) };
    };
    const d =
      draft === 'default'
        ? file(this.options.exitFile, `the server runs without an exit file (--exit): give adainfer.speculative.draft as { "layer": n } or 'auto'`)
        : draft === 'auto'
          ? file(this.options.autoExitFile, `no exit file is shipped for the model '${this.modelId}'`)
          : { draft, label: `layer ${draft.layer}` };
    return { spec: { draft: d.draft, ...(o.max_draft !== undefined && { maxDraft: o.max_draft }), ...(o.adaptive !== undefined && { adaptive: o.adaptive }) }, label: d.label };
  }

  /** The exit spec of a request and how the response names it. */
  private exitOf(body: CommonBody): { spec: ExitSpec; label: string | ThresholdExit } {
    const choice = body.adainfer?.exit ?? 'default';
    const file = (f: string | undefined) => (f === undefined ? { spec: 'never' as const, label: 'never' } : { spec: f, label: path.basename(f) });
    if (choice === 'default') return file(this.options.exitFile);
    if (choice === 'never') return { spec: 'never', label: 'never' };
    if (choice === 'auto') {
      if (this.options.autoExitFile === undefined) throw invalidRequest(`no exit file is shipped for the model '${this.modelId}'`, 'adainfer.exit', 'no_exit_file');
      return file(this.options.autoExitFile);
    }
    return { spec: choice, label: choice };
  }
}

/** The last event of a stream. */
const DONE = '[DONE]';

/** Reads a choice's token events to its end; `finish` is set when it returns. */
async function runChoice(c: Choice, onToken: (exitLayer: number) => void, onText?: (text: string) => void): Promise<void> {
  const stream = c.stream!;
  for await (const e of stream) {
    c.exitLayers.push(e.exitLayer);
    onToken(e.exitLayer);
    if (e.text) {
      c.text += e.text;
      onText?.(e.text);
    }
  }
  const r = await stream.result;
  c.promptTokens = r.promptTokens;
  // The result's text is the events' text, and an incomplete UTF-8 sequence at the very end (U+FFFD), if any.
  if (r.text.length > c.text.length && r.text.startsWith(c.text)) {
    const rest = r.text.slice(c.text.length);
    c.text = r.text;
    onText?.(rest);
  }
  c.finish = finishReason(r);
  c.timings = r.timings;
  c.speculative = r.speculative;
}

/** The prompts of a completion request: one text or token-id list per prompt. */
function completionPrompts(body: CompletionBody): (string | number[])[] {
  const p = body.prompt;
  if (typeof p === 'string' || typeof p[0] === 'number') return [p as string | number[]];
  return p as string[] | number[][];
}

/** The model's chat template, the override, or why there is none. */
function chatTemplateOf(model: Model, template: string | undefined): ChatRenderer | { missing: string } {
  try {
    return ChatTemplate.fromModel(model, template);
  } catch (err) {
    if (err instanceof AdaInferError && err.code === 'NO_CHAT_TEMPLATE') return { missing: err.message };
    throw err;
  }
}

/** What the server does not implement is refused by name rather than ignored. */
function refuseUnsupported(endpoint: Endpoint, body: CompletionBody | ChatBody): void {
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw invalidRequest('logit_bias is not supported', 'logit_bias', 'unsupported');
  if (endpoint === 'completions') {
    const c = body as CompletionBody;
    if (c.logprobs !== undefined && c.logprobs !== null) throw invalidRequest('logprobs is not supported', 'logprobs', 'unsupported');
    if (c.echo) throw invalidRequest('echo is not supported', 'echo', 'unsupported');
    if (c.suffix) throw invalidRequest('suffix is not supported', 'suffix', 'unsupported');
    if (c.best_of !== undefined && c.best_of !== null && c.best_of > 1) throw invalidRequest('best_of > 1 is not supported', 'best_of', 'unsupported');
  } else {
    const c = body as ChatBody;
    if (c.logprobs) throw invalidRequest('logprobs is not supported', 'logprobs', 'unsupported');
    if (c.tools && c.tools.length > 0) throw invalidRequest('tools are not supported', 'tools', 'unsupported');
    if (c.response_format && c.response_format.type !== undefined && c.response_format.type !== 'text')
      throw invalidRequest('response_format other than text is not supported', 'response_format', 'unsupported');
  }
}

function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b);
}

function endpointLabel(req: FastifyRequest): string {
  const url = req.url.split('?')[0];
  return url === '/v1/completions' ? 'completions' : url === '/v1/chat/completions' ? 'chat' : url.replace(/^\//, '') || 'other';
}

/** Any error as the OpenAI error it answers with. */
function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { statusCode?: number; code?: string; message?: string; validation?: { instancePath?: string; params?: Record<string, unknown> }[] };
  if (e.validation) {
    const v = e.validation[0];
    const param = v?.instancePath ? v.instancePath.replace(/^\//, '').replace(/\//g, '.') : ((v?.params?.missingProperty as string | undefined) ?? null);
    return invalidRequest(`invalid request body: ${e.message ?? 'does not match the schema'}`, param, 'invalid_type');
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError(413, 'the request body is too large', 'invalid_request_error', null, 'body_too_large');
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (err instanceof SyntaxError && e.statusCode === 400))
    return invalidRequest(`the body is not valid JSON: ${e.message}`, null, 'invalid_json');
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return invalidRequest('send the body as application/json', null, 'invalid_content_type');
  if (err instanceof AdaInferError) {
    const option = (err as { option?: string }).option ?? null;
    if (err.code === 'CONTEXT_OVERFLOW') return new ApiError(413, err.message, 'invalid_request_error', 'prompt', 'context_length_exceeded');
    if (err.code === 'INVALID_OPTION' || err.code === 'EXIT_FILE' || err.code === 'TOKENIZER' || err.code === 'CHAT_TEMPLATE')
      return invalidRequest(err.message, option, err.code.toLowerCase());
    if (err.code === 'DISPOSED' || err.code === 'ABORTED') return new ApiError(503, err.message, 'server_error', null, 'shutting_down');
    return new ApiError(500, err.message, 'server_error', null, err.code.toLowerCase());
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return invalidRequest(e.message ?? 'bad request');
  return new ApiError(500, e.message ?? String(err), 'server_error');
}
