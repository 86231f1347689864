/**
 * The OpenAI wire format of the server: request body schemas (JSON Schema, checked by fastify's Ajv before a
 * handler runs), the error body, and the response and stream-chunk objects. No model work here.
 *
 * Fields OpenAI defines that this server does not implement are refused with a 400 naming them when they ask for
 * something (logprobs, echo, suffix, best_of > 1, logit_bias); fields it does not know at all are ignored, as
 * OpenAI's own API does with unknown fields of a client newer than it.
 */
import type { BatchSequenceResult, SpeculativeStats } from '../api';

/** `{ error: { message, type, param, code } }` with its HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });

/** A threshold exit as a request may name it (the engine's ExitSpec of kind 'threshold'). */
const thresholdExitSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'feature', 'value'],
  properties: {
    kind: { const: 'threshold' },
    feature: { enum: ['p1', 'gap'] },
    value: { type: 'number', minimum: 0, maximum: 1 },
    minLayer: { type: 'integer', minimum: 1 },
    checkEvery: { type: 'integer', minimum: 1 },
    mode: { enum: ['faithful', 'fast'] },
  },
} as const;

/** The `adainfer` extension object of a request. */
const adainferSchema = nullable({
  type: 'object',
  additionalProperties: false,
  properties: {
    /** 'default': the server's --exit; 'auto': the model's shipped exit file; 'never': full depth; or a threshold. */
    exit: { anyOf: [{ enum: ['default', 'auto', 'never'] }, thresholdExitSchema] },
    /**
     * Self-speculative decoding: true (draft with the server's --exit file), or { draft?, max_draft?, adaptive? }
     * with draft 'default' (the server's --exit file), 'auto' (the model's shipped exit file) or { layer }.
     */
    speculative: nullable({
      anyOf: [
        { type: 'boolean' },
        {
          type: 'object',
          additionalProperties: false,
          properties: {
            draft: {
              anyOf: [
                { enum: ['default', 'auto'] },
                { type: 'object', additionalProperties: false, required: ['layer'], properties: { layer: { type: 'integer', minimum: 1 } } },
              ],
            },
            max_draft: { type: 'integer', minimum: 1 },
            adaptive: { type: 'boolean' },
          },
        },
      ],
    }),
  },
});

/** The `adainfer.speculative` of a request. */
export type SpeculativeRequest = boolean | { draft?: 'default' | 'auto' | { layer: number }; max_draft?: number; adaptive?: boolean } | null;

/** Sampling and limits shared by both endpoints. */
const commonProperties = {
  model: { type: 'string', minLength: 1 },
  max_tokens: nullable({ type: 'integer', minimum: 0 }),
  temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
  top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
  /** Not OpenAI's (llama.cpp's server has it): 0 = off. */
  top_k: nullable({ type: 'integer', minimum: 0 }),
  n: nullable({ type: 'integer', minimum: 1, maximum: 16 }),
  stream: nullable({ type: 'boolean' }),
  stream_options: nullable({ type: 'object', properties: { include_usage: { type: 'boolean' } } }),
  stop: nullable({ anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 4 }] }),
  seed: nullable({ type: 'integer' }),
  presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  /** Not OpenAI's (llama.cpp's server has them): the repeat penalty (1 = off) and the penalties' window (-1: all). */
  repeat_penalty: nullable({ type: 'number', exclusiveMinimum: 0 }),
  repeat_last_n: nullable({ type: 'integer', minimum: -1 }),
  logit_bias: nullable({ type: 'object' }),
  user: { type: 'string' },
  adainfer: adainferSchema,
} as const;

const tokenIds = { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } as const;

export const completionBodySchema = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...commonProperties,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, items: tokenIds },
      ],
    },
    logprobs: nullable({ type: 'integer', minimum: 0 }),
    echo: nullable({ type: 'boolean' }),
    suffix: nullable({ type: 'string' }),
    best_of: nullable({ type: 'integer', minimum: 1 }),
  },
} as const;

const contentPart = { type: 'object', required: ['type'], properties: { type: { type: 'string' }, text: { type: 'string' } } } as const;

export const chatBodySchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...commonProperties,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: { anyOf: [{ type: 'string' }, { type: 'null' }, { type: 'array', items: contentPart }] },
          name: { type: 'string' },
        },
      },
    },
    max_completion_tokens: nullable({ type: 'integer', minimum: 0 }),
    logprobs: nullable({ type: 'boolean' }),
    top_logprobs: nullable({ type: 'integer', minimum: 0 }),
    tools: nullable({ type: 'array' }),
    response_format: nullable({ type: 'object' }),
  },
} as const;

export type ThresholdExit = { kind: 'threshold'; feature: 'p1' | 'gap'; value: number; minLayer?: number; checkEvery?: number; mode?: 'faithful' | 'fast' };

export interface CommonBody {
  model: string;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repeat_penalty?: number | null;
  repeat_last_n?: number | null;
  logit_bias?: Record<string, unknown> | null;
  user?: string;
  adainfer?: { exit?: 'default' | 'auto' | 'never' | ThresholdExit; speculative?: SpeculativeRequest } | null;
}

export interface CompletionBody extends CommonBody {
  prompt: string | string[] | number[] | number[][];
  logprobs?: number | null;
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
}

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: string | null | { type: string; text?: string }[];
  name?: string;
}

export interface ChatBody extends CommonBody {
  messages: ChatMessage[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  tools?: unknown[] | null;
  response_format?: { type?: string } | null;
}

/** OpenAI's finish_reason for the engine's stop reason. */
export function finishReason(r: BatchSequenceResult | { stopReason: string }): 'stop' | 'length' {
  return r.stopReason === 'maxTokens' || r.stopReason === 'contextFull' ? 'length' : 'stop';
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The `adainfer` object of a response: each choice's exit layers per token, their mean, and the whole mean. */
/** How a choice's self-speculative decoding went (its tokens are the full model's: exit_layers say n_layer). */
export interface SpeculativeReport {
  /** The drafter: an exit file's name, or 'layer N'. */
  draft: string;
  drafted: number;
  accepted: number;
  acceptance_rate: number;
  mean_draft_length: number;
  /** Layers computed per token of the speculative rounds (drafts and verifications). */
  layers_per_token: number;
}

export interface AdainferReport {
  n_layer: number;
  /** The exit policy the request ran under: 'never', an exit file's name, or the threshold. */
  exit: string | ThresholdExit;
  choices: { index: number; exit_layers: number[]; mean_layers: number; speculative?: SpeculativeReport }[];
  /** Mean layers per generated token over every choice (n_layer at full depth; 0 with no token). */
  mean_layers: number;
}

export function adainferReport(
  nLayer: number,
  exit: string | ThresholdExit,
  choices: { index: number; exitLayers: number[]; speculative?: SpeculativeStats }[],
  draft?: string,
): AdainferReport {
  const mean = (a: number[]) => (a.length === 0 ? 0 : a.reduce((s, v) => s + v, 0) / a.length);
  const speculative = (s: SpeculativeStats): SpeculativeReport => ({
    draft: draft ?? '',
    drafted: s.drafted,
    accepted: s.accepted,
    acceptance_rate: s.acceptanceRate,
    mean_draft_length: s.meanDraftLength,
    layers_per_token: s.layersPerToken,
  });
  return {
    n_layer: nLayer,
    exit,
    choices: choices.map((c) => ({
      index: c.index,
      exit_layers: c.exitLayers,
      mean_layers: mean(c.exitLayers),
      ...(c.speculative && { speculative: speculative(c.speculative) }),
    })),
    mean_layers: mean(choices.flatMap((c) => c.exitLayers)),
  };
}
