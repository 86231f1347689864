/**
 * The lines of a batch input file, in either shape:
 *
 * - adainfer's own `{ "id", "prompt", "maxTokens"? }` ('legacy'), and
 * - the OpenAI Batch API's `{ "custom_id", "method": "POST", "url": "/v1/completions" | "/v1/chat/completions",
 *   "body": { "prompt" | "messages", "max_tokens"?, "temperature"?, "top_p"?, "top_k"?, "seed"?, "stop"?, ... } }`
 *   ('openai'; chat messages become the prompt through the model's chat template, lib/chat/template.ts).
 *
 * One parser for `adainfer batch` (one machine) and `adainfer batch submit` (the queue). A line that cannot be
 * keyed — not JSON, not an object, no usable id, an id used twice — makes the whole file an error (DATA_FILE
 * naming the lines), as the OpenAI Batch API refuses such a file. A keyed line whose request is unusable (a wrong
 * url, a bad max_tokens, an unsupported field) is parsed into a request with `invalid` set: the queue turns it
 * into an error record, the one-machine command refuses the file.
 */
import * as fs from 'fs';
import type { ChatMessage } from '../chat/template';
import { AdaInferError } from '../errors';

export type RequestShape = 'legacy' | 'openai';

export const COMPLETIONS_URL = '/v1/completions';
export const CHAT_COMPLETIONS_URL = '/v1/chat/completions';

/** Per-line sampling that overrides the job's (OpenAI body: temperature, top_p, top_k). */
export interface RequestSampling {
  temperature?: number;
  topP?: number;
  topK?: number;
}

export interface BatchRequest {
  /** The line's key as given: `id` (legacy, string or number) or `custom_id` (openai, string). */
  customId: string | number;
  /** The key results are stored, deduplicated and matched by: idKey(customId) (1 and "1" differ). */
  key: string;
  shape: RequestShape;
  /** 0-based index among the input's records (blank lines not counted): the default seed is job seed + index. */
  index: number;
  /** 1-based line number in the input file. */
  line: number;
  /** 'chat': a /v1/chat/completions line, whose `messages` the model's chat template turns into the prompt. */
  kind?: 'completion' | 'chat';
  /** The prompt (text or token ids) of a completion; absent when `invalid` and for chat. */
  prompt?: string | number[];
  messages?: ChatMessage[];
  maxTokens?: number;
  /** Stop strings (OpenAI body `stop`). */
  stop?: string[];
  /** The line's own seed (OpenAI body `seed`). */
  seed?: number;
  sampling?: RequestSampling;
  /** Why this request cannot run (an error record with status 400), and the field at fault. */
  invalid?: { message: string; param?: string };
}

/** The key an id is deduplicated and matched by (1 and "1" are different ids). */
export const idKey = (id: unknown): string => JSON.stringify(id);

export function dataError(file: string, message: string): AdaInferError {
  return new AdaInferError('DATA_FILE', `${file}: ${message}`);
}

/** The seed a request samples with: its own, else the job's seed + its index (mod 2^32) — never the worker's. */
export function requestSeed(request: BatchRequest, jobSeed: number): number {
  return request.seed ?? (jobSeed + request.index) % 0x100000000;
}

/** Reads and parses a batch input file; see the module comment for what is an error and what is `invalid`. */
export function readBatchRequests(file: string): BatchRequest[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw dataError(file, `cannot read: ${(e as Error).message}`);
  }
  return parseBatchRequests(text, file);
}

export function parseBatchRequests(text: string, file: string): BatchRequest[] {
  const requests: BatchRequest[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw dataError(file, `line ${line}: not valid JSON (${(e as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v))
      throw dataError(file, `line ${line}: expected an object { "custom_id", "method", "url", "body" } or { "id", "prompt", "maxTokens"? }`);
    const o = v as Record<string, unknown>;
    const index = requests.length;
    if ('custom_id' in o) {
      if (typeof o.custom_id !== 'string' || o.custom_id.length === 0) throw dataError(file, `line ${line}: "custom_id" must be a non-empty string`);
      requests.push({ customId: o.custom_id, key: idKey(o.custom_id), shape: 'openai', index, line, ...openaiRequest(o) });
      return;
    }
    const id = o.id;
    if (!((typeof id === 'string' && id.length > 0) || (typeof id === 'number' && Number.isFinite(id))))
      throw dataError(file, `line ${line}: "id" must be a non-empty string or a number (or give "custom_id", the OpenAI batch shape)`);
    requests.push({ customId: id, key: idKey(id), shape: 'legacy', index, line, ...legacyRequest(o) });
  });
  checkUniqueKeys(file, requests);
  return requests;
}

type Parsed = Pick<BatchRequest, 'kind' | 'prompt' | 'messages' | 'maxTokens' | 'stop' | 'seed' | 'sampling' | 'invalid'>;

const invalid = (message: string, param?: string): Parsed => ({ invalid: { message, param } });

function legacyRequest(o: Record<string, unknown>): Parsed {
  if (typeof o.prompt !== 'string') return invalid('"prompt" must be a string', 'prompt');
  if (o.maxTokens !== undefined && !isCount(o.maxTokens)) return invalid('"maxTokens" must be an integer >= 0', 'maxTokens');
  return { prompt: o.prompt, maxTokens: o.maxTokens as number | undefined };
}

/** Body fields adainfer reads; `model` and `user` are accepted and ignored (the job names the model). */
const COMMON_FIELDS = ['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'n', 'stream', 'stop', 'user'];
const COMPLETION_FIELDS = new Set([...COMMON_FIELDS, 'prompt']);
const CHAT_FIELDS = new Set([...COMMON_FIELDS, 'messages', 'max_completion_tokens']);

function openaiRequest(o: Record<string, unknown>): Parsed {
  if (o.method !== 'POST') return invalid(`"method" must be "POST", got ${JSON.stringify(o.method)}`, 'method');
  if (o.url !== COMPLETIONS_URL && o.url !== CHAT_COMPLETIONS_URL)
    return invalid(`"url" must be "${COMPLETIONS_URL}" or "${CHAT_COMPLETIONS_URL}", got ${JSON.stringify(o.url)}`, 'url');
  const chat = o.url === CHAT_COMPLETIONS_URL;
  const body = o.body;
  if (!body || typeof body !== 'object' || Array.isArray(body)) return invalid('"body" must be an object', 'body');
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !(chat ? CHAT_FIELDS : COMPLETION_FIELDS).has(k));
  if (unknown.length > 0) return invalid(`body field(s) not supported: ${unknown.join(', ')}`, unknown[0]);
  const parsed: Parsed = {};
  if (chat) {
    const messages = b.messages;
    if (!Array.isArray(messages) || messages.length === 0) return invalid('"body.messages" must be a non-empty array of { "role", "content" }', 'messages');
    for (const [i, m] of messages.entries())
      if (!m || typeof m !== 'object' || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string')
        return invalid(`"body.messages[${i}]" must be { "role": string, "content": string }`, 'messages');
    parsed.kind = 'chat';
    parsed.messages = (messages as ChatMessage[]).map((m) => ({ role: m.role, content: m.content }));
  } else {
    const prompt = b.prompt;
    const tokenIds = Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => Number.isInteger(t) && (t as number) >= 0);
    if (!(typeof prompt === 'string' || tokenIds))
      return invalid('"body.prompt" must be a string or an array of token ids (one prompt per line)', 'prompt');
    parsed.prompt = prompt as string | number[];
  }
  const maxTokens = chat && b.max_completion_tokens !== undefined ? b.max_completion_tokens : b.max_tokens;
  if (maxTokens !== undefined && !isCount(maxTokens)) return invalid('"body.max_tokens" must be an integer >= 0', 'max_tokens');
  if (b.n !== undefined && b.n !== 1) return invalid('"body.n" must be 1 (one completion per line)', 'n');
  if (b.stream !== undefined && b.stream !== false) return invalid('"body.stream" is not supported in a batch', 'stream');
  if (b.temperature !== undefined && !(typeof b.temperature === 'number' && b.temperature >= 0 && b.temperature <= 100))
    return invalid('"body.temperature" must be a number >= 0', 'temperature');
  if (b.top_p !== undefined && !(typeof b.top_p === 'number' && b.top_p > 0 && b.top_p <= 1)) return invalid('"body.top_p" must be a number in (0, 1]', 'top_p');
  if (b.top_k !== undefined && !isCount(b.top_k)) return invalid('"body.top_k" must be an integer >= 0', 'top_k');
  if (b.seed !== undefined && !(isCount(b.seed) && (b.seed as number) <= 0xffffffff)) return invalid('"body.seed" must be an integer in [0, 2^32)', 'seed');
  const stop = typeof b.stop === 'string' ? [b.stop] : b.stop;
  if (stop !== undefined && stop !== null && !(Array.isArray(stop) && stop.length <= 4 && stop.every((x) => typeof x === 'string' && x.length > 0)))
    return invalid('"body.stop" must be a non-empty string or an array of up to 4 of them', 'stop');
  const sampling: RequestSampling = {};
  if (b.temperature !== undefined) sampling.temperature = b.temperature as number;
  if (b.top_p !== undefined) sampling.topP = b.top_p as number;
  if (b.top_k !== undefined) sampling.topK = b.top_k as number;
  return {
    ...parsed,
    maxTokens: maxTokens as number | undefined,
    stop: Array.isArray(stop) && stop.length > 0 ? (stop as string[]) : undefined,
    seed: b.seed as number | undefined,
    sampling: Object.keys(sampling).length > 0 ? sampling : undefined,
  };
}

function isCount(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function checkUniqueKeys(file: string, requests: BatchRequest[]): void {
  const lineOf = new Map<string, number[]>();
  for (const r of requests) {
    const at = lineOf.get(r.key);
    if (at) at.push(r.line);
    else lineOf.set(r.key, [r.line]);
  }
  const dups = [...lineOf].filter(([, at]) => at.length > 1);
  if (dups.length > 0) {
    const shown = dups.slice(0, 10).map(([k, at]) => `${k} (lines ${at.join(', ')})`);
    throw dataError(file, `duplicate ids: ${shown.join('; ')}${dups.length > 10 ? `; and ${dups.length - 10} more` : ''}`);
  }
}
