/**
 * `adainfer serve` (lib/server/server.ts) driven by the official `openai` npm client on 127.0.0.1, on the
 * bundled model: completions and chat (plain and streamed) equal the same requests run alone in a fresh session;
 * 32 concurrent greedy requests too; every error status; a disconnecting client frees its slot; /health answers
 * during a long generation; the CLI exits 0 on SIGTERM after finishing the request in flight.
 */
import { spawn } from 'child_process';
import * as path from 'path';
import OpenAI from 'openai';
import { loadModel, Model } from '../../lib';
import { AdaInferServer } from '../../lib/server/server';
import { ChatTemplate } from '../../lib/chat/template';
import { findShippedExitFile } from '../../lib/cli/exit_choice';
import { BUNDLED_MODEL, repoRoot } from '../helpers';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const KEY = 'test-key-123';
const MODEL_ID = 'adainfer-tinystories-10L-ee.f16';
const TEXTS = [
  'Once upon a time',
  'The little dog ran to the park and',
  'Lily wanted a big red ball',
  'Tom and Sam were',
  'One day, a cat',
  'The sun was hot',
  'Mom said',
  'There was a big tree',
];


let model: Model;
let server: AdaInferServer;
let client: OpenAI;
let base: string;
let autoExit: string;

beforeAll(async () => {
  model = await loadModel(BUNDLED_MODEL, { threads: 1 });
  autoExit = findShippedExitFile({ ...model.info })!;
  server = await AdaInferServer.create({ model, parallel: 8, maxQueue: 64, contextSize: 256, apiKey: KEY, template: 'chatml', autoExitFile: autoExit, bodyLimit: 64 * 1024 });
  base = `${await server.listen('127.0.0.1', 0)}`;
  client = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0, timeout: 60_000 });
});

afterAll(async () => {
  await server?.shutdown(0);
  await model?.dispose();
});

/** The same request alone: a fresh session, greedy unless a seed and temperature are given. */
async function alone(
  prompt: string | number[],
  o: { maxTokens: number; exit?: string; temperature?: number; seed?: number; topP?: number; topK?: number; presencePenalty?: number; frequencyPenalty?: number; stop?: string[] },
) {
  const s = await model.createSession({ contextSize: 256 });
  try {
    const { maxTokens, exit, temperature, topP, topK, ...rest } = o;
    return await s.generate(prompt, { maxTokens, temperature: temperature ?? 0, topP: topP ?? 1, topK: topK ?? 0, exit, ...rest });
  } finally {
    await s.dispose();
  }
}

async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const r = await fetch(`${base}${url}`, { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers } });
  return { status: r.status, body: (await r.json()) as { error?: { type: string; code: string | null; param: string | null; message: string } } };
}

describe('completions', () => {
  test('greedy, with and without early exit: the text and exit layers of the request alone; usage and the adainfer report', async () => {
    for (const exit of [undefined, 'auto'] as const) {
      const r = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[1], max_tokens: 24, temperature: 0, ...(exit && { adainfer: { exit } }) } as OpenAI.CompletionCreateParamsNonStreaming);
      const want = await alone(TEXTS[1], { maxTokens: 24, exit: exit && autoExit });
      expect(r.object).toBe('text_completion');
      expect(r.model).toBe(MODEL_ID);
      expect(r.choices[0].text).toBe(want.text);
      expect(r.choices[0].finish_reason).toBe(want.stopReason === 'eos' ? 'stop' : 'length');
      expect(r.usage).toEqual({ prompt_tokens: want.promptTokens, completion_tokens: want.tokens.length, total_tokens: want.promptTokens + want.tokens.length });
      const report = (r as unknown as { adainfer: { n_layer: number; exit: string; mean_layers: number; choices: { exit_layers: number[]; mean_layers: number }[] } }).adainfer;
      expect(report.choices[0].exit_layers).toEqual(want.exitLayers);
      expect(report.mean_layers).toBeCloseTo(want.exitLayers.reduce((a, b) => a + b, 0) / want.exitLayers.length, 10);
      expect(report.exit).toBe(exit ? path.basename(autoExit) : 'never');
      if (exit) expect(report.mean_layers).toBeLessThan(report.n_layer);
      else expect(report.mean_layers).toBe(report.n_layer);
    }
  });

  test('sampling with a seed, n choices and several prompts: each choice as the request alone with seed + its index', async () => {
    const prompts = [TEXTS[0], TEXTS[2]];
    const r = await client.completions.create({ model: MODEL_ID, prompt: prompts, max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 41, n: 2 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(new Set(r.choices.map((c) => c.text)).size).toBe(4);
    for (const c of r.choices) {
      const want = await alone(prompts[c.index >> 1], { maxTokens: 12, temperature: 0.9, topP: 0.9, seed: 41 + (c.index & 1) });
      expect(c.text).toBe(want.text);
    }
  });

  test('streaming: the chunks add up to the plain answer; usage and the report come last, then [DONE]', async () => {
    const plain = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[3], max_tokens: 30, temperature: 0 });
    const stream = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[3], max_tokens: 30, temperature: 0, stream: true });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      for (const c of chunk.choices) {
        text += c.text;
        finish = c.finish_reason ?? finish;
      }
      usage = chunk.usage ?? usage;
    }
    expect(text).toBe(plain.choices[0].text);
    expect(finish).toBe(plain.choices[0].finish_reason);
    expect(usage).toEqual(plain.usage);
    expect(chunks).toBeGreaterThan(10);
    // the raw stream ends with data: [DONE]
    const raw = await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: MODEL_ID, prompt: TEXTS[3], max_tokens: 3, stream: true }),
    });
    expect(raw.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect((await raw.text()).trimEnd().endsWith('data: [DONE]')).toBe(true);
  });

  test('presence and frequency penalties: as the request alone with the same penalties (and not as without them)', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[5], max_tokens: 40, temperature: 0, presence_penalty: 1.5, frequency_penalty: 0.5 });
    const want = await alone(TEXTS[5], { maxTokens: 40, presencePenalty: 1.5, frequencyPenalty: 0.5 });
    const plain = await alone(TEXTS[5], { maxTokens: 40 });
    expect(r.choices[0].text).toBe(want.text);
    expect(want.text).not.toBe(plain.text);
  });

  test('stop strings end the text before them (plain and streamed)', async () => {
    const full = await alone(TEXTS[0], { maxTokens: 40 });
    const stop = ' girl';
    expect(full.text).toContain(stop);
    const want = full.text.slice(0, full.text.indexOf(stop));
    expect((await alone(TEXTS[0], { maxTokens: 40, stop: [stop] })).text).toBe(want);
    const r = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 40, temperature: 0, stop: [stop, 'zzz'] });
    expect(r.choices[0].text).toBe(want);
    expect(r.choices[0].finish_reason).toBe('stop');
    let streamed = '';
    for await (const chunk of await client.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 40, temperature: 0, stop, stream: true }))
      for (const c of chunk.choices) streamed += c.text;
    expect(streamed).toBe(want);
  });

  test('32 concurrent greedy requests (mixed lengths and exits) equal the same requests run alone', async () => {
    const requests = Array.from({ length: 32 }, (_, i) => ({
      prompt: TEXTS[i % TEXTS.length],
      max_tokens: 8 + ((i * 7) % 25),
      exit: i % 3 === 0 ? ('auto' as const) : ('never' as const),
      stream: i % 4 === 1,
    }));
    const answers = await Promise.all(
      requests.map(async (q) => {
        const params = { model: MODEL_ID, prompt: q.prompt, max_tokens: q.max_tokens, temperature: 0, adainfer: { exit: q.exit } };
        if (!q.stream) return (await client.completions.create(params as OpenAI.CompletionCreateParamsNonStreaming)).choices[0].text;
        let text = '';
        for await (const chunk of await client.completions.create({ ...params, stream: true } as OpenAI.CompletionCreateParamsStreaming)) for (const c of chunk.choices) text += c.text;
        return text;
      }),
    );
    for (let i = 0; i < requests.length; i++) {
      const q = requests[i];
      const want = await alone(q.prompt, { maxTokens: q.max_tokens, exit: q.exit === 'auto' ? autoExit : undefined });
      expect([i, answers[i]]).toEqual([i, want.text]);
    }
  });
});

describe('chat completions', () => {
  const messages = [
    { role: 'system' as const, content: 'You tell stories.' },
    { role: 'user' as const, content: 'Once upon a time' },
  ];
  const rendered = () => ChatTemplate.fromModel(model, 'chatml').render(messages);

  test('the rendered conversation continued as the prompt alone; streamed deltas add up to the message', async () => {
    const r = await client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 20, temperature: 0 });
    const want = await alone(await model.tokenize(rendered(), { addSpecial: true, parseSpecial: true }), { maxTokens: 20 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message).toEqual(expect.objectContaining({ role: 'assistant', content: want.text }));
    expect(r.usage?.completion_tokens).toBe(want.tokens.length);
    let content = '';
    let role: string | undefined;
    for await (const chunk of await client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 20, temperature: 0, stream: true })) {
      expect(chunk.object).toBe('chat.completion.chunk');
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        content += c.delta.content ?? '';
      }
    }
    expect(role).toBe('assistant');
    expect(content).toBe(want.text);
  });

  test('a model without a chat template: 400 chat_template_missing', async () => {
    const bare = await AdaInferServer.create({ model, parallel: 1, contextSize: 64 });
    const url = await bare.listen('127.0.0.1', 0);
    try {
      const c = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0 });
      await expect(c.chat.completions.create({ model: MODEL_ID, messages })).rejects.toMatchObject({ status: 400, code: 'chat_template_missing' });
    } finally {
      await bare.shutdown(0);
    }
  });
});

describe('self-speculative decoding per request (adainfer.speculative)', () => {
  type Report = { adainfer: { exit: string; choices: { speculative?: { draft: string; drafted: number; accepted: number; acceptance_rate: number; layers_per_token: number } }[] } };

  test('greedy, drafted at a fixed depth or by the shipped exit file: the full-depth text; the report says how the drafts went', async () => {
    const want = await alone(TEXTS[0], { maxTokens: 40 });
    for (const [draft, label] of [[{ layer: 3 }, 'layer 3'], ['auto', path.basename(autoExit)]] as const) {
      const r = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 40, temperature: 0, adainfer: { speculative: { draft, max_draft: 4 } } } as OpenAI.CompletionCreateParamsNonStreaming);
      expect(r.choices[0].text).toBe(want.text);
      expect(r.usage!.completion_tokens).toBe(want.tokens.length);
      const report = (r as unknown as Report).adainfer;
      expect(report.exit).toBe('never');
      const s = report.choices[0].speculative!;
      expect(s.draft).toBe(label);
      expect(s.drafted).toBeGreaterThan(0);
      expect(s.accepted).toBeLessThanOrEqual(s.drafted);
      expect(s.acceptance_rate).toBeCloseTo(s.accepted / s.drafted, 12);
      expect(s.layers_per_token).toBeGreaterThan(0);
    }
  });

  test('streamed, and side by side with plain and early-exit requests in one batch: each equals its request alone', async () => {
    const kinds = ['speculative', 'plain', 'exit', 'speculative', 'speculative', 'plain', 'exit', 'speculative'] as const;
    const run = async (text: string, kind: (typeof kinds)[number]) => {
      const adainfer = kind === 'speculative' ? { speculative: { draft: { layer: 2 } } } : kind === 'exit' ? { exit: 'auto' } : undefined;
      const stream = await client.completions.create({ model: MODEL_ID, prompt: text, max_tokens: 32, temperature: 0, stream: true, ...(adainfer && { adainfer }) } as OpenAI.CompletionCreateParamsStreaming);
      let out = '';
      for await (const chunk of stream) out += chunk.choices[0]?.text ?? '';
      return out;
    };
    const got = await Promise.all(TEXTS.map((t, i) => run(t, kinds[i])));
    for (let i = 0; i < TEXTS.length; i++) expect(got[i]).toBe((await alone(TEXTS[i], { maxTokens: 32, exit: kinds[i] === 'exit' ? autoExit : undefined })).text);
  });

  test('sampled: speculative sampling gives what the same request gives alone with speculative decoding (same seed)', async () => {
    const s = await model.createSession({ contextSize: 256 });
    try {
      const want = await s.generate(TEXTS[2], { maxTokens: 24, temperature: 0.9, topP: 1, topK: 0, seed: 7, speculative: { draft: { layer: 3 } } });
      const r = await client.completions.create({ model: MODEL_ID, prompt: TEXTS[2], max_tokens: 24, temperature: 0.9, seed: 7, adainfer: { speculative: { draft: { layer: 3 } } } } as OpenAI.CompletionCreateParamsNonStreaming);
      expect(r.choices[0].text).toBe(want.text);
    } finally {
      await s.dispose();
    }
  });
});

describe('errors are OpenAI error JSON with the right status', () => {
  test('400: bad JSON, a field of the wrong type, an unsupported option, a speculative request the server cannot run', async () => {
    const bad = await post('/v1/completions', '{"model": "x", "prompt": ');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_json' });
    await expect(client.completions.create({ model: MODEL_ID, prompt: 'x', max_tokens: '5' as unknown as number })).rejects.toMatchObject({ status: 400, param: 'max_tokens' });
    await expect(client.completions.create({ model: MODEL_ID, prompt: 'x', temperature: 3 })).rejects.toMatchObject({ status: 400, param: 'temperature' });
    await expect(client.completions.create({ model: MODEL_ID, prompt: 'x', logprobs: 2 })).rejects.toMatchObject({ status: 400, param: 'logprobs' });
    const speculative = (adainfer: unknown) =>
      client.completions.create({ model: MODEL_ID, prompt: 'x', max_tokens: 4, adainfer } as OpenAI.CompletionCreateParamsNonStreaming);
    // This server runs without --exit: the default drafter is its exit file.
    await expect(speculative({ speculative: true })).rejects.toMatchObject({ status: 400, param: 'adainfer.speculative.draft', code: 'no_exit_file' });
    await expect(speculative({ speculative: { draft: { layer: 3 } }, exit: 'auto' })).rejects.toMatchObject({ status: 400, param: 'adainfer.exit' });
    await expect(speculative({ speculative: { draft: { layer: 0 } } })).rejects.toMatchObject({ status: 400 });
    await expect(speculative({ speculative: { draft: { layer: 10 } } })).rejects.toMatchObject({ status: 400, param: 'speculative' });
    // 8 slots in 520 rows: every slot's verification must fit one step, so at most 64 drafts.
    await expect(speculative({ speculative: { draft: { layer: 3 }, max_draft: 65 } })).rejects.toMatchObject({ status: 400, param: 'speculative' });
    await expect(speculative({ speculative: { draft: { layer: 3 }, max_draf: 4 } })).rejects.toMatchObject({ status: 400 });
    await expect(
      client.completions.create({ model: MODEL_ID, prompt: 'x', adainfer: { exit: 'sometimes' } } as OpenAI.CompletionCreateParamsNonStreaming),
    ).rejects.toMatchObject({ status: 400 });
  });

  test('401: a missing or wrong API key (health stays open)', async () => {
    const wrong = new OpenAI({ apiKey: 'nope', baseURL: `${base}/v1`, maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    const none = await fetch(`${base}/v1/models`);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    expect((await fetch(`${base}/health`)).status).toBe(200);
  });

  test('404: an unknown model, an unknown route; /v1/models lists the one served', async () => {
    await expect(client.completions.create({ model: 'gpt-4', prompt: 'x' })).rejects.toMatchObject({ status: 404, code: 'model_not_found', param: 'model' });
    const r = await fetch(`${base}/v1/nothing`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('not_found');
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL_ID]);
  });

  test('413: a prompt longer than the context, a body over the limit', async () => {
    await expect(client.completions.create({ model: MODEL_ID, prompt: new Array(300).fill(5) })).rejects.toMatchObject({ status: 413, code: 'context_length_exceeded' });
    // streamed too: the status waits for the first event
    await expect(client.completions.create({ model: MODEL_ID, prompt: 'Once upon a time '.repeat(80), stream: true })).rejects.toMatchObject({ status: 413 });
    const big = await post('/v1/completions', JSON.stringify({ model: MODEL_ID, prompt: 'x'.repeat(100 * 1024) }));
    expect(big.status).toBe(413);
    expect(big.body.error?.code).toBe('body_too_large');
  });

  test('503 with Retry-After when the queue is full, rather than stalling', async () => {
    const small = await AdaInferServer.create({ model, parallel: 1, maxQueue: 0, contextSize: 256 });
    const url = await small.listen('127.0.0.1', 0);
    try {
      const c = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0 });
      const long = await c.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 200, temperature: 0, stream: true });
      const it = long[Symbol.asyncIterator]();
      await it.next(); // running
      const t0 = performance.now();
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL_ID, prompt: 'x', max_tokens: 2 }) });
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('server_overloaded');
      long.controller.abort();
    } finally {
      await small.shutdown(0);
    }
  });
});

describe('the batch and the event loop', () => {
  test('a client that disconnects frees its slot at the next step', async () => {
    const small = await AdaInferServer.create({ model, parallel: 1, maxQueue: 4, contextSize: 256 });
    const url = await small.listen('127.0.0.1', 0);
    try {
      const c = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0 });
      const stream = await c.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 230, temperature: 0, stream: true, stop: null });
      let tokens = 0;
      for await (const _chunk of stream) if (++tokens === 3) break; // leaving the loop closes the connection
      // The one slot is free again: a second request is served at once, and the first generated far fewer than 230 tokens.
      const t0 = performance.now();
      const next = await c.completions.create({ model: MODEL_ID, prompt: TEXTS[1], max_tokens: 4, temperature: 0 });
      expect(next.choices[0].text.length).toBeGreaterThan(0);
      const waited = performance.now() - t0;
      const metrics = await (await fetch(`${url}/metrics`)).text();
      const generated = Number(/^adainfer_generated_tokens_total (\d+)/m.exec(metrics)![1]);
      expect(generated).toBeLessThan(100);
      expect(waited).toBeLessThan(5000);
      const health = (await (await fetch(`${url}/health`)).json()) as { inFlight: number };
      expect(health.inFlight).toBe(0);
    } finally {
      await small.shutdown(0);
    }
  });

  test('/health keeps answering while the worker generates', async () => {
    const long = Promise.all(
      [0, 1, 2, 3].map((i) => client.completions.create({ model: MODEL_ID, prompt: TEXTS[i], max_tokens: 240, temperature: 0.8, seed: i, stop: null })),
    );
    let done = false;
    void long.then(() => (done = true));
    const latencies: number[] = [];
    await new Promise((r) => setTimeout(r, 100));
    while (!done && latencies.length < 20) {
      const t0 = performance.now();
      const r = await fetch(`${base}/health`);
      expect(r.status).toBe(200);
      const h = (await r.json()) as { inFlight: number };
      if (h.inFlight > 0) latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
    await long;
    expect(latencies.length).toBeGreaterThanOrEqual(5);
    latencies.sort((a, b) => a - b);
    // a median health check far below one long generation (seconds): the event loop is not blocked
    expect(latencies[latencies.length >> 1]).toBeLessThan(200);
  });

  test('/metrics: Prometheus text with requests, tokens/s, queue depth, mean layers per token and the worker\'s parts of the time to first token', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'adainfer_requests_total',
      'adainfer_generated_tokens_total',
      'adainfer_generated_tokens_per_second',
      'adainfer_queue_depth',
      'adainfer_requests_running',
      'adainfer_mean_layers_per_token',
      'adainfer_time_to_first_token_seconds_bucket',
      'adainfer_queue_wait_seconds_bucket',
      'adainfer_prefill_seconds_bucket',
    ])
      expect(text).toMatch(new RegExp(`^${name}`, 'm'));
    // the worker's parts of the time to first token: one observation of each per finished generation
    const count = (name: string) => Number(new RegExp(`^${name}_count (\\S+)`, 'm').exec(text)![1]);
    const sum = (name: string) => Number(new RegExp(`^${name}_sum (\\S+)`, 'm').exec(text)![1]);
    expect(count('adainfer_prefill_seconds')).toBeGreaterThan(0);
    expect(count('adainfer_queue_wait_seconds')).toBe(count('adainfer_prefill_seconds'));
    expect(sum('adainfer_prefill_seconds')).toBeGreaterThan(0);
    const mean = Number(/^adainfer_mean_layers_per_token (\S+)/m.exec(text)![1]);
    expect(mean).toBeGreaterThan(1);
    expect(mean).toBeLessThan(model.info.nLayer); // some requests ran with the shipped exit
  });
});

test('the CLI: SIGTERM lets the request in flight finish, then exits 0', async () => {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--threads', '1', '--parallel', '2', '--context', '128'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`serve exited early: ${out}${err}`)));
  });
  const c = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0 });
  const stream = await c.completions.create({ model: MODEL_ID, prompt: TEXTS[0], max_tokens: 60, temperature: 0, stream: true });
  let text = '';
  let finish: string | null = null;
  let signalled = false;
  for await (const chunk of stream) {
    if (!signalled) {
      signalled = true;
      child.kill('SIGTERM');
    }
    for (const ch of chunk.choices) {
      text += ch.text;
      finish = ch.finish_reason ?? finish;
    }
  }
  expect(finish).toBe('length');
  expect(text).toBe((await alone(TEXTS[0], { maxTokens: 60 })).text);
  expect(await exited).toBe(0);
  expect(out).toMatch(/SIGTERM: shutting down/);
  expect(out).toMatch(/stopped/);
  expect(err).toBe('');
});
