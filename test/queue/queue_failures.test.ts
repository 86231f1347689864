/**
 * What goes wrong in a queued batch, on a real Redis: bad input lines (error records, never retried), a Redis
 * restart without persistence mid-job (a clear error, then `submit --resume`), SIGTERM to a worker mid-shard
 * (exit 0, the shard handed back and finished elsewhere), and transient failures (retried with backoff; the last
 * attempt leaves error records so that collect can finish).
 */
import * as fs from 'fs';
import * as path from 'path';
import IORedis from 'ioredis';
import { loadModel, Model } from '../../lib';
import { readBatchRequests } from '../../lib/batch/requests';
import { JobStore } from '../../lib/queue/store';
import { submitJob } from '../../lib/queue/submit';
import { BatchWorker } from '../../lib/queue/worker';
import { BUNDLED_MODEL, tmpDir } from '../helpers';
import { generated, readJsonl, requestId, runCli, waitComplete, WorkerProcess } from './cli';
import { describeRedis, RedisServer } from './redis';

const STARTS = ['Once upon a time', 'The little dog', 'Lily wanted', 'Tom and Sam were', 'One day, a cat', 'The sun was'];

function completions(n: number, maxTokens: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/completions', body: { prompt: `${STARTS[i % STARTS.length]} ${i}`, max_tokens: maxTokens } }),
  );
}

describeRedis('queued batch failures', (binary) => {
  const dir = tmpDir('adainfer-queue-fail-');
  let redis: RedisServer;
  const workers: WorkerProcess[] = [];
  beforeAll(async () => {
    redis = await RedisServer.start(binary);
  });
  afterAll(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const worker = (extra: string[] = []) => {
    const w = new WorkerProcess(redis.url, extra);
    workers.push(w);
    return w;
  };
  const write = (name: string, lines: string[]) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    return file;
  };

  test('bad input lines become error records (400, never retried); unkeyable lines refuse the file', async () => {
    const lines = [
      ...completions(4, 6),
      JSON.stringify({ custom_id: 'chat', method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'user', content: 'hi' }] } }),
      JSON.stringify({ custom_id: 'url', method: 'POST', url: '/v1/embeddings', body: { input: 'x' } }),
      JSON.stringify({ custom_id: 'method', method: 'GET', url: '/v1/completions', body: { prompt: 'x' } }),
      JSON.stringify({ custom_id: 'maxtok', method: 'POST', url: '/v1/completions', body: { prompt: 'x', max_tokens: -3 } }),
      JSON.stringify({ custom_id: 'logprobs', method: 'POST', url: '/v1/completions', body: { prompt: 'x', logprobs: 2 } }),
      JSON.stringify({ custom_id: 'nobody', method: 'POST', url: '/v1/completions' }),
      JSON.stringify({ id: 'legacy-bad', prompt: 'x', maxTokens: 'many' }),
      JSON.stringify({ custom_id: 'toolong', method: 'POST', url: '/v1/completions', body: { prompt: 'the dog ran '.repeat(150) } }),
      JSON.stringify({ custom_id: 'vocab', method: 'POST', url: '/v1/completions', body: { prompt: [1, 99999] } }),
    ];
    const input = write('bad.jsonl', lines);
    const expected: Record<string, RegExp> = {
      chat: /the model has no chat template/,
      url: /"url" must be/,
      method: /"method" must be "POST"/,
      maxtok: /max_tokens/,
      logprobs: /not supported: logprobs/,
      nobody: /"body" must be an object/,
      'legacy-bad': /"maxTokens" must be an integer/,
      toolong: /more than the context of 256/,
      vocab: /beyond the vocabulary/,
    };

    // One machine refuses such a file, naming the lines.
    const single = await runCli(['batch', '--in', input, '--out', path.join(dir, 'bad.single.jsonl'), '--threads', '1']);
    expect(single.code).toBe(1);
    expect(single.stderr).toMatch(/DATA_FILE.*line 6: "url" must be.*line 7: "method"/);

    const submit = await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'bad', '--shard-size', '3', '--json']);
    expect(submit.code).toBe(0);
    expect(JSON.parse(submit.stdout)).toMatchObject({ total: 13, invalid: 6, queued: 7, shards: 3 });
    const w = worker();
    await waitComplete(redis.url, 'bad');
    const out = path.join(dir, 'bad.out.jsonl');
    expect((await runCli(['batch', 'collect', 'bad', '--queue', redis.url, '--out', out])).stderr).toMatch(/13 record\(s\) written .*\(9 error record/);
    const records = readJsonl<Record<string, any>>(out);
    expect(records.map((r) => r.custom_id)).toEqual([0, 1, 2, 3].map((i) => `r${i}`).concat(Object.keys(expected)));
    for (const r of records) {
      if (String(r.custom_id).startsWith('r')) {
        expect(r.response.status_code).toBe(200);
        continue;
      }
      expect(r).toMatchObject({ response: { status_code: 400, body: { error: { type: 'invalid_request_error' } } }, error: null });
      expect({ id: r.custom_id, message: r.response.body.error.message }).toEqual({ id: r.custom_id, message: expect.stringMatching(expected[r.custom_id]) });
    }
    // Each shard ran once: bad input is not a failure to retry.
    expect(w.log.match(/started/g)).toHaveLength(3);
    expect(w.log).not.toMatch(/attempt 2|failed/);

    // Lines that cannot be keyed refuse the whole file before anything is queued.
    const unkeyed = write('unkeyed.jsonl', [...completions(2, 4), '{"custom_id": "x", "method": ', JSON.stringify({ custom_id: 'r0', method: 'POST', url: '/v1/completions', body: { prompt: 'x' } })]);
    const r = await runCli(['batch', 'submit', '--queue', redis.url, '--in', unkeyed, '--job', 'unkeyed']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/DATA_FILE.*line 3: not valid JSON/);
    const dup = write('dup.jsonl', [...completions(2, 4), JSON.stringify({ custom_id: 'r0', method: 'POST', url: '/v1/completions', body: { prompt: 'x' } })]);
    expect((await runCli(['batch', 'submit', '--queue', redis.url, '--in', dup, '--job', 'dup'])).stderr).toMatch(/duplicate ids: "r0" \(lines 1, 3\)/);
    expect((await runCli(['batch', 'status', 'unkeyed', '--queue', redis.url, '--json'])).stderr).toMatch(/QUEUE_JOB.*never submitted/);
    w.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
  }, 180_000);

  test('chat lines: the chat template makes the prompt; records equal single-process batch', async () => {
    const lines = [
      ...completions(2, 6),
      ...['Tell me a story', 'What did the dog do?', 'Hello'].map((content, i) =>
        JSON.stringify({ custom_id: `chat${i}`, method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content }], max_completion_tokens: 8, stop: ['.'] } }),
      ),
    ];
    const input = write('chat.jsonl', lines);
    const flags = ['--template', 'chatml', '--temp', '0.8', '--seed', '2'];
    expect((await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'chat', '--shard-size', '2', ...flags])).code).toBe(0);
    const w = worker();
    await waitComplete(redis.url, 'chat');
    const out = path.join(dir, 'chat.out.jsonl');
    expect((await runCli(['batch', 'collect', 'chat', '--queue', redis.url, '--out', out])).code).toBe(0);
    const refOut = path.join(dir, 'chat.ref.jsonl');
    expect((await runCli(['batch', '--in', input, '--out', refOut, '--threads', '1', ...flags])).code).toBe(0);
    const reference = new Map(readJsonl<Record<string, any>>(refOut).map((r) => [requestId(r), r.response.body]));
    const records = readJsonl<Record<string, any>>(out);
    expect(records).toHaveLength(5);
    for (const r of records.filter((x) => x.custom_id.startsWith('chat'))) {
      const body = r.response.body;
      expect(body).toMatchObject({ object: 'chat.completion', choices: [{ message: { role: 'assistant', content: expect.any(String) } }] });
      expect(body.usage.prompt_tokens).toBeGreaterThan(20); // the template's system and user turns
      expect(body.choices[0].message.content).not.toMatch(/\./); // stopped before the stop string
      const ref = reference.get(r.custom_id);
      expect({ id: r.custom_id, message: body.choices[0].message, tokens: body.adainfer.tokens }).toEqual({ id: r.custom_id, message: ref.choices[0].message, tokens: ref.adainfer.tokens });
    }
    w.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
  }, 180_000);

  test('SIGTERM mid-shard: the worker exits 0 and hands the shard back; another worker finishes it', async () => {
    // One shard of many one-at-a-time generations: seconds long, so that the SIGTERM falls inside it.
    const input = write('term.jsonl', completions(60, 32));
    expect((await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'term', '--shard-size', '60', '--batch-size', '1', '--temp', '0'])).code).toBe(0);
    const a = worker();
    await a.waitFor(/shard term\.g1\.s0 started/);
    await new Promise((r) => setTimeout(r, 300));
    a.kill('SIGTERM');
    const exit = await a.exited;
    expect(exit.code).toBe(0);
    const handed = a.log.match(/shard term\.g1\.s0 handed back \((\d+) records stored\)/);
    expect({ handed: handed !== null, log: a.log }).toEqual({ handed: true, log: a.log });
    expect(a.log).not.toContain('shard term.g1.s0 done');

    const b = worker();
    await waitComplete(redis.url, 'term');
    // The second worker ran only what the first had not stored.
    const done = (await b.waitFor(/shard term\.g1\.s0 done \((\d+) stored, (\d+) already there/)) as RegExpMatchArray;
    expect(Number(done[2])).toBe(Number(handed![1]));
    expect(Number(done[1]) + Number(done[2])).toBe(60);
    const out = path.join(dir, 'term.out.jsonl');
    expect((await runCli(['batch', 'collect', 'term', '--queue', redis.url, '--out', out])).code).toBe(0);
    expect(new Set(readJsonl<Record<string, any>>(out).map((r) => r.custom_id)).size).toBe(60);
    b.kill('SIGTERM');
    expect((await b.exited).code).toBe(0);
  }, 180_000);

  test('a Redis restart without persistence mid-job is a clear error; submit --resume queues again what has no result', async () => {
    const input = write('restart.jsonl', completions(80, 16));
    const flags = ['--temp', '0.8', '--seed', '3'];
    expect((await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'restart', '--shard-size', '5', '--batch-size', '2', ...flags])).code).toBe(0);
    const w = worker();
    await w.waitFor(/shard restart\.g1\.s2 done/);
    await redis.restart();

    const status = await runCli(['batch', 'status', 'restart', '--queue', redis.url, '--json']);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/QUEUE_JOB.*job 'restart' is not in Redis .*Redis lost its data \(a restart without persistence\).*submit --resume/);
    expect((await runCli(['batch', 'collect', 'restart', '--queue', redis.url, '--out', path.join(dir, 'x.jsonl')])).stderr).toMatch(/QUEUE_JOB/);

    const resume = await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'restart', '--shard-size', '5', '--batch-size', '2', '--resume', '--json', ...flags]);
    expect(resume.code).toBe(0);
    const report = JSON.parse(resume.stdout);
    expect(report).toMatchObject({ total: 80, recreated: true, generation: 1 });
    expect(report.queued + report.alreadyDone).toBe(80);
    expect(report.queued).toBeGreaterThan(60); // what was stored before the restart is gone

    await waitComplete(redis.url, 'restart');
    expect(w.child.exitCode).toBeNull(); // the worker lived through the restart
    expect(w.log).toMatch(/Redis at redis:\/\/127\.0\.0\.1:\d+ restarted \(a new run_id\): the jobs queued before are lost unless it persisted them/);
    const out = path.join(dir, 'restart.out.jsonl');
    expect((await runCli(['batch', 'collect', 'restart', '--queue', redis.url, '--out', out])).code).toBe(0);
    const records = readJsonl<Record<string, any>>(out);
    expect(records.map((r) => r.custom_id)).toEqual(Array.from({ length: 80 }, (_, i) => `r${i}`));
    const refOut = path.join(dir, 'restart.ref.jsonl');
    expect((await runCli(['batch', '--in', input, '--out', refOut, '--threads', '1', ...flags])).code).toBe(0);
    const reference = new Map(readJsonl<Record<string, any>>(refOut).map((r) => [requestId(r), generated(r)]));
    for (const r of records) expect({ id: r.custom_id, ...generated(r) }).toEqual({ id: r.custom_id, ...reference.get(r.custom_id) });
    w.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
  }, 240_000);

  describe('transient failures (a model whose generation fails)', () => {
    let model: Model;
    let client: IORedis;
    let connection: IORedis;
    beforeAll(async () => {
      model = await loadModel(BUNDLED_MODEL, { threads: 1, backend: 'cpu' });
      client = new IORedis(redis.url, { maxRetriesPerRequest: null });
      connection = new IORedis(redis.url, { maxRetriesPerRequest: null });
    });
    afterAll(async () => {
      client?.disconnect();
      connection?.disconnect();
      await model?.dispose();
    });

    /** The bundled model, whose generateBatch fails its first `failures` calls as a lost device would. */
    function flaky(failures: number): { model: Model; calls: () => number } {
      let calls = 0;
      const double = Object.create(model) as Model;
      double.generateBatch = (prompts, options) => (++calls <= failures ? Promise.reject(new Error('CUDA error: device lost')) : model.generateBatch(prompts, options));
      return { model: double, calls: () => calls };
    }

    async function run(job: string, failures: number, attempts: number): Promise<{ records: Record<string, any>[]; log: string; calls: number }> {
      const input = write(`${job}.jsonl`, completions(6, 4));
      await submitJob(client, {
        name: job,
        model: { fingerprint: model.info.fingerprint, name: model.info.name },
        requests: readBatchRequests(input),
        options: { kvFill: 'propagate', batchSize: 4, maxTokens: 4, temperature: 0, topK: 40, topP: 0.95, seed: 0, compaction: true },
        shardSize: 6,
        resume: false,
        attempts,
        url: redis.url,
      });
      const f = flaky(failures);
      let log = '';
      const w = new BatchWorker({ model: f.model, redis: client, connection, stallIntervalMs: 2000, log: (l) => (log += l + '\n') });
      try {
        const store = new JobStore(client, job);
        const deadline = Date.now() + 60_000;
        while ((await store.counts()).stored < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      } finally {
        await w.stop();
      }
      const out = path.join(dir, `${job}.out.jsonl`);
      expect((await runCli(['batch', 'collect', job, '--queue', redis.url, '--out', out])).code).toBe(0);
      return { records: readJsonl(out), log, calls: f.calls() };
    }

    test('a failure is retried with backoff and the retry stores every record', async () => {
      const t0 = Date.now();
      const { records, log, calls } = await run('transient', 1, 3);
      expect(calls).toBe(2);
      expect(log).toMatch(/shard transient\.g1\.s0 failed \(attempt 1\): CUDA error: device lost/);
      expect(log).toMatch(/shard transient\.g1\.s0 started \(6 requests, attempt 2\)/);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000); // the backoff
      expect(records.map((r) => r.response.status_code)).toEqual([200, 200, 200, 200, 200, 200]);
    }, 120_000);

    test('a shard that fails every attempt leaves an error record for each of its requests', async () => {
      const { records, calls } = await run('doomed', 100, 2);
      expect(calls).toBe(2);
      for (const r of records) {
        expect(r.response).toBeNull();
        expect(r.error).toEqual({ code: 'shard_failed', message: expect.stringMatching(/failed 2 time\(s\); last: CUDA error: device lost/) });
      }
      expect(records).toHaveLength(6);
    }, 120_000);
  });
});
