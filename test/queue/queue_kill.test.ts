/**
 * The multi-machine batch mode on one machine: a real Redis, a submitter, three worker processes, 300 requests,
 * one worker killed with SIGKILL in the middle of a shard. Every custom_id must come out of `collect` exactly
 * once, each record equal (text, tokens, layers per token, stop reason) to what the single-process
 * `adainfer batch` writes for the same line and seed — sampling at temperature 0.8 with the shipped exit
 * classifier, so that seeds and exits both have to follow the line, not the worker or the shard.
 */
import * as fs from 'fs';
import * as path from 'path';
import { tmpDir } from '../helpers';
import { generated, readJsonl, requestId, runCli, waitComplete, WorkerProcess } from './cli';
import { describeRedis, RedisServer } from './redis';

const STARTS = ['Once upon a time', 'The little dog', 'Lily wanted', 'Tom and Sam were', 'One day, a cat', 'The sun was', 'Mom said', 'A big bird'];
const N = 300;

describeRedis('batch across worker processes on one Redis', (binary) => {
  const dir = tmpDir('adainfer-queue-kill-');
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

  test('300 requests, 3 workers, one killed mid-shard: every custom_id once, each as single-process batch writes it', async () => {
    // OpenAI lines (some with their own seed, max_tokens or temperature) and a few in adainfer's own shape.
    const lines = Array.from({ length: N }, (_, i) => {
      const prompt = `${STARTS[i % STARTS.length]} ${i}`;
      if (i % 25 === 7) return { id: `legacy-${i}`, prompt, maxTokens: 6 };
      const body: Record<string, unknown> = { model: 'adainfer-tinystories-10L-ee', prompt, max_tokens: 12 };
      if (i % 10 === 3) body.seed = 1000 + i;
      if (i % 30 === 11) body.temperature = 0;
      return { custom_id: `req-${i}`, method: 'POST', url: '/v1/completions', body };
    });
    const input = path.join(dir, 'requests.jsonl');
    fs.writeFileSync(input, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const jobFlags = ['--temp', '0.8', '--seed', '17', '--exit', 'auto', '--max-tokens', '12'];

    const submit = await runCli(['batch', 'submit', '--queue', redis.url, '--in', input, '--job', 'big', '--shard-size', '20', '--batch-size', '4', '--json', ...jobFlags]);
    expect({ code: submit.code, stderr: submit.stderr }).toEqual({ code: 0, stderr: expect.stringContaining('submit: job big') });
    expect(JSON.parse(submit.stdout)).toMatchObject({ total: N, queued: N, shards: 15, invalid: 0 });

    for (let i = 0; i < 3; i++) workers.push(new WorkerProcess(redis.url));
    // The victim is killed as soon as it starts its second shard (its first one is done, so it has stored records).
    const victim = workers[0];
    const second = await victim.waitFor(/shard (\S+) started[^]*shard (\S+) started/);
    victim.kill('SIGKILL');
    const killedShard = second[2];
    const killed = await victim.exited;
    expect(killed.signal).toBe('SIGKILL');
    expect(victim.log).not.toContain(`shard ${killedShard} done`);

    // The single-process reference, run meanwhile (the workers keep going).
    const refOut = path.join(dir, 'reference.jsonl');
    const ref = await runCli(['batch', '--in', input, '--out', refOut, '--threads', '1', ...jobFlags]);
    expect(ref.stderr).toContain(`${N} record(s) written`);

    const status = await waitComplete(redis.url, 'big');
    expect(status).toMatchObject({ total: N, succeeded: N, failed: 0, remaining: 0, complete: true });
    // The killed shard was taken over (after the stall interval) by a surviving worker.
    const survivors = workers.slice(1).map((w) => w.log).join('\n');
    expect(survivors).toContain(`shard ${killedShard} started`);
    expect(survivors).toContain(`shard ${killedShard} done`);

    const out = path.join(dir, 'results.jsonl');
    const collect = await runCli(['batch', 'collect', 'big', '--queue', redis.url, '--out', out]);
    expect(collect.code).toBe(0);
    const records = readJsonl<Record<string, any>>(out);
    expect(records).toHaveLength(N);
    const ids = records.map((r) => r.custom_id);
    expect(new Set(ids).size).toBe(N);
    expect(ids).toEqual(lines.map((l) => ('custom_id' in l ? l.custom_id : l.id))); // input order

    const reference = new Map(readJsonl<Record<string, any>>(refOut).map((r) => [requestId(r), generated(r)]));
    expect(reference.size).toBe(N);
    let exited = 0;
    for (const r of records) {
      expect(r).toMatchObject({ id: expect.stringMatching(/^batch_req_/), response: { status_code: 200 }, error: null });
      expect(r.response.body).toMatchObject({ object: 'text_completion', choices: [{ index: 0, text: expect.any(String) }] });
      expect(r.response.body.usage.completion_tokens).toBe(r.response.body.adainfer.tokens.length);
      expect({ id: r.custom_id, ...generated(r) }).toEqual({ id: r.custom_id, ...reference.get(r.custom_id) });
      if (r.response.body.adainfer.exitLayers.some((l: number) => l < 10)) exited++;
    }
    expect(exited).toBeGreaterThan(0); // the shipped exit classifier did exit somewhere: exits must match too

    // SIGTERM: the surviving workers stop and exit 0.
    for (const w of workers.slice(1)) w.kill('SIGTERM');
    for (const w of workers.slice(1)) expect((await w.exited).code).toBe(0);
  }, 300_000);
});
