/**
 * The records a batch writes, one JSON line per request:
 *
 * - OpenAI batch output shape: `{ id, custom_id, response: { status_code, request_id, body }, error }`. A completed
 *   request's body is a completion response (`object: "text_completion"`, or `"chat.completion"` with
 *   `choices[0].message`; `choices`, `usage`) plus an `adainfer`
 *   object with the exit statistics (tokens, layers per token, mean layers, seed, timings). A request that is bad
 *   input has status 400 and `body.error` (as the OpenAI API answers it); a request that could not be run for
 *   another reason (its shard failed every retry) has `response: null` and `error: { code, message }`.
 * - adainfer's own `{ id, text, tokens, exitLayers, timings, stopReason, promptTokens }`, written by the
 *   one-machine `adainfer batch` for a line in its own shape (what it always wrote).
 *
 * With self-speculative decoding both shapes carry `speculative` (acceptance, draft length, layers per token, and
 * the measured step costs). Every field but `created` and the timings (`timings`, the step costs) depends only on
 * the request, its seed and the model, so a request run twice (a shard re-run, another machine) gives the same
 * record.
 */
import { createHash } from 'crypto';
import type { BatchSequenceResult } from '../engine/batch';
import type { BatchRequest } from './requests';

export interface RecordModel {
  name: string;
  fingerprint: string;
  nLayer: number;
}

export interface CompletionBody {
  id: string;
  object: 'text_completion' | 'chat.completion';
  created: number;
  model: string;
  /** `text` for /v1/completions, `message` for /v1/chat/completions. */
  choices: { index: 0; text?: string; message?: { role: 'assistant'; content: string }; logprobs: null; finish_reason: 'stop' | 'length' }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  adainfer: {
    fingerprint: string;
    seed: number;
    tokens: number[];
    exitLayers: number[];
    meanLayers: number | null;
    nLayer: number;
    stopReason: string;
    stopString?: string;
    speculative?: BatchSequenceResult['speculative'];
    timings: BatchSequenceResult['timings'];
  };
}

export interface OutputRecord {
  id: string;
  custom_id: string | number;
  response: { status_code: number; request_id: string; body: CompletionBody | { error: { message: string; type: string; param: string | null; code: string } } } | null;
  error: { code: string; message: string } | null;
}

/** A stable id for a request's record: the same on every machine and every re-run. */
function requestHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 24);
}

export function completionRecord(request: BatchRequest, r: BatchSequenceResult, model: RecordModel, seed: number): OutputRecord {
  const hash = requestHash(request.key);
  const layerSum = r.exitLayers.reduce((a, b) => a + b, 0);
  const chat = request.kind === 'chat';
  const finish = r.stopReason === 'eos' || r.stopReason === 'stop' ? 'stop' : 'length';
  return {
    id: `batch_req_${hash}`,
    custom_id: request.customId,
    response: {
      status_code: 200,
      request_id: `req_${hash}`,
      body: {
        id: `${chat ? 'chatcmpl' : 'cmpl'}-${hash}`,
        object: chat ? 'chat.completion' : 'text_completion',
        created: Math.floor(Date.now() / 1000),
        model: model.name,
        choices: [
          chat
            ? { index: 0, message: { role: 'assistant', content: r.text }, logprobs: null, finish_reason: finish }
            : { index: 0, text: r.text, logprobs: null, finish_reason: finish },
        ],
        usage: { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length },
        adainfer: {
          fingerprint: model.fingerprint,
          seed,
          tokens: r.tokens,
          exitLayers: r.exitLayers,
          meanLayers: r.tokens.length > 0 ? layerSum / r.tokens.length : null,
          nLayer: model.nLayer,
          stopReason: r.stopReason,
          ...(r.stopString !== undefined && { stopString: r.stopString }),
          ...(r.speculative && { speculative: r.speculative }),
          timings: r.timings,
        },
      },
    },
    error: null,
  };
}

/** A request that is bad input: status 400 with the API's error body; never retried. */
export function invalidRequestRecord(request: BatchRequest, message: string, param?: string): OutputRecord {
  const hash = requestHash(request.key);
  return {
    id: `batch_req_${hash}`,
    custom_id: request.customId,
    response: {
      status_code: 400,
      request_id: `req_${hash}`,
      body: { error: { message, type: 'invalid_request_error', param: param ?? null, code: 'invalid_request' } },
    },
    error: null,
  };
}

/** A request that was not run (its shard failed every attempt): no response, the reason in `error`. */
export function failedRequestRecord(request: BatchRequest, code: string, message: string): OutputRecord {
  return { id: `batch_req_${requestHash(request.key)}`, custom_id: request.customId, response: null, error: { code, message } };
}

/** Whether a record reports a failure (a 400 or a run that failed) rather than a completion. */
export function isErrorRecord(record: OutputRecord): boolean {
  return record.error !== null || record.response === null || record.response.status_code !== 200;
}

/** adainfer's own record, for a line in its own shape run by the one-machine `adainfer batch`. */
export function legacyRecord(request: BatchRequest, r: BatchSequenceResult): Record<string, unknown> {
  return {
    id: request.customId,
    text: r.text,
    tokens: r.tokens,
    exitLayers: r.exitLayers,
    timings: r.timings,
    stopReason: r.stopReason,
    promptTokens: r.promptTokens,
    ...(r.speculative && { speculative: r.speculative }),
  };
}

/** The request id a written record answers (`custom_id` of the OpenAI shape, else `id`); undefined for anything else. */
export function recordRequestId(v: unknown): unknown {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  return 'custom_id' in o ? o.custom_id : o.id;
}
